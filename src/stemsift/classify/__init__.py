"""Multi-label instrument classifier Ψ and the self-refining of pseudo labels (Koo et al., ISMIR 2023)."""
