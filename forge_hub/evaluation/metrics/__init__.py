"""`evaluate` metrics shipped with forge-hub (load them by path: ``evaluate.load(<module dir>)``)."""
