"""stemsift: data-versioned curation of music-source-separation training stems."""

__version__ = "0.1.0"

# The four MUSDB targets, in the order every table and model uses.
LABELS: tuple[str, ...] = ("vocals", "bass", "drums", "other")
MIXTURE = "mixture"
SPLITS: tuple[str, ...] = ("train", "reference", "test")
