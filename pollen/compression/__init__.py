"""Update compression: codec stages (topz, uniform, kmeans, ternary, fp16, zstd), the codec
pipeline, error feedback and the pollen.v1 wire format with validation of untrusted payloads.

    codec = Codec.parse("topz:0.05 > kmeans:16 > zstd")     # see codec.py for the rules
    blob = codec.encode(update)                              # dict[str, array] -> bytes
    update = decode_update(blob, expected={name: (shape, "float32")}, max_bytes=..., client=id)
    ef = ErrorFeedback(codec); blob = ef.encode(update); ef.state_dict() / ef.load_state_dict()
"""

from pollen.compression.codec import Codec
from pollen.compression.feedback import ErrorFeedback
from pollen.compression.stage import STAGES, Kind, Param, Stage
from pollen.compression.wire import DEFAULT_MAX_BYTES, FORMAT_VERSION, decode_update


def encode_update(update: dict, codec: "Codec | str" = "none") -> bytes:
    """Encode `update` with `codec` (a Codec or a spec string)."""
    return Codec.parse(codec).encode(update)


__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMAT_VERSION",
    "STAGES",
    "Codec",
    "ErrorFeedback",
    "Kind",
    "Param",
    "Stage",
    "decode_update",
    "encode_update",
]
