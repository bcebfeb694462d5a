package auth

// The routes whose permissions differ from read. Every other path, including ones added
// later and unknown ones, needs read: a writer must not be able to read through a route
// this table forgot.
const (
	writePath   = "/api/v1/write"
	metricsPath = "/metrics"
	healthyPath = "/-/healthy"
	readyPath   = "/-/ready"
)

// required is the permission a request to path needs. Probes and metrics need a valid
// identity but no permission, so that a write-only Prometheus can also scrape pyramid.
func required(path string) permission {
	switch path {
	case writePath:
		return permWrite
	case metricsPath, healthyPath, readyPath:
		return 0
	}
	return permRead
}

// probePath reports whether path may be listed in unauthenticated_paths.
func probePath(path string) bool {
	switch path {
	case metricsPath, healthyPath, readyPath:
		return true
	}
	return false
}
