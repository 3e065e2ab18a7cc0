"""The model closure: configs, models, the Sinkhorn solver, losses, image processor, processor, sliding-window
inference and pipelines. A saved Hub folder carries exactly these files as its remote code, so they import only
each other (single-dot relative imports) and nothing else of otseg_hf."""
