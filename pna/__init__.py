"""pna: models, synthetic tasks, the thermodynamic loss, training and analysis for "Architectural Proprioception
in State Space Models" on top of the fused kernels in pna_kernels."""
