// Package promrules holds only a test: docs/prometheus-alerts.yml parses with Prometheus's
// rule parser and queries only the metrics and label values the plugin serves.
package promrules
