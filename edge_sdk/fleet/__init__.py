"""Cloud-side tools: deploy bundles, watch nodes, local brokers."""
