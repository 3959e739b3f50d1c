"""Embed stage: encoders (a registry of named entries), streaming, views and the cache.

The built-in encoders register themselves when their files are imported here; none of
them imports torch or transformers until one is built.
"""

import medsort.embed.biomedclip
import medsort.embed.hub
import medsort.embed.onnx_encoder  # noqa: F401
