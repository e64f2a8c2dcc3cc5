"""Frame-embedder registry: get_embedder(name, params) -> Embedder (fadtk's ModelLoader pattern).

Importing this package is cheap: torch, torchcrepe, cdpam's weights and transformers load when an embedder is built."""
from stemsift.embed import cdpam, crepe, hub, mel  # noqa: F401  (importing registers the embedders)
from stemsift.embed.base import (
    REGISTRY,
    Embedder,
    EmbedderError,
    get_embedder,
    register,
)

__all__ = ["REGISTRY", "Embedder", "EmbedderError", "get_embedder", "register"]
