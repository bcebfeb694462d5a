package rollup

// TierStatus is what one tier holds. Rows and bytes count every stored row, including
// versions and duplicates that merges have not collapsed yet.
type TierStatus struct {
	Name         string `json:"name"`
	ResolutionMs int64  `json:"resolution_ms"`
	// Retention is the tier's retention in Prometheus's duration syntax, or "forever".
	Retention   string `json:"retention"`
	Rows        uint64 `json:"rows"`
	BytesOnDisk uint64 `json:"bytes_on_disk"`
	// Oldest and Newest are the first and last sample (raw) or bucket start (rollups), in
	// ms; absent while the tier is empty.
	Oldest *int64 `json:"oldest_ms,omitempty"`
	Newest *int64 `json:"newest_ms,omitempty"`
	// LagMs is how far the tier's newest bucket ends before raw's newest sample; 0 for raw.
	LagMs int64 `json:"lag_ms"`
}

// NewTierStatus is t's status before anything stored is counted: its name, resolution and
// retention.
func NewTierStatus(t Tier) TierStatus {
	st := TierStatus{Name: t.Name, ResolutionMs: t.ResolutionMs(), Retention: "forever"}
	if !t.Forever() {
		st.Retention = formatDuration(t.Retention)
	}
	return st
}
