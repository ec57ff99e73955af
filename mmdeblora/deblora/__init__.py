"""The debLoRA method in plain torch: no runner, no registry."""
