package httpapi

import (
	"context"
	"net/http"
	"time"
)

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// readyz answers 200 only when every dependency answers, so a load balancer
// stops sending requests to an instance that cannot serve them.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{}
	ready := true
	for _, c := range s.deps.Checks {
		if err := c.Ping(ctx); err != nil {
			ready = false
			checks[c.Name] = "unavailable"
			logger(r.Context()).Warn().Err(err).Str("check", c.Name).Msg("readiness check failed")
			continue
		}
		checks[c.Name] = "ok"
	}
	status, code := "ready", http.StatusOK
	if !ready {
		status, code = "unavailable", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"status": status, "checks": checks})
	return nil
}
