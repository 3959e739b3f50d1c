"""Name stage: modality and condition names for the groups, or an honest "unnamed"."""

from medsort.name.cli import add_commands
from medsort.name.naming import MIN_CONFIDENCE, NAME_COLUMNS, name_groups
from medsort.name.vocabulary import Vocabulary, load_vocabulary

__all__ = [
    "MIN_CONFIDENCE",
    "NAME_COLUMNS",
    "Vocabulary",
    "add_commands",
    "load_vocabulary",
    "name_groups",
]
