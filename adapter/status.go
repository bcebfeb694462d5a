package adapter

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup"
)

// StatusHandler serves the tiers' status (store.Status) as JSON: {"tiers": [TierStatus...]}.
func StatusHandler(st *store.Store, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		status, err := st.Status(ctx)
		if err != nil {
			logger.Warn("tier status", "err", err)
			http.Error(w, "read tier status: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Tiers []rollup.TierStatus `json:"tiers"`
		}{status})
	})
}
