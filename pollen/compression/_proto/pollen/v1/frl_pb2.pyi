from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FrlFormatVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRL_FORMAT_VERSION_UNSPECIFIED: _ClassVar[FrlFormatVersion]
    FRL_FORMAT_VERSION_1: _ClassVar[FrlFormatVersion]
FRL_FORMAT_VERSION_UNSPECIFIED: FrlFormatVersion
FRL_FORMAT_VERSION_1: FrlFormatVersion

class LayerRanking(_message.Message):
    __slots__ = ("name", "size", "id_bits", "ids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ID_BITS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    size: int
    id_bits: int
    ids: bytes
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., id_bits: _Optional[int] = ..., ids: _Optional[bytes] = ...) -> None: ...

class ClientRanking(_message.Message):
    __slots__ = ("format_version", "layers")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    format_version: FrlFormatVersion
    layers: _containers.RepeatedCompositeFieldContainer[LayerRanking]
    def __init__(self, format_version: _Optional[_Union[FrlFormatVersion, str]] = ..., layers: _Optional[_Iterable[_Union[LayerRanking, _Mapping]]] = ...) -> None: ...

class GlobalRanking(_message.Message):
    __slots__ = ("format_version", "layers")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    format_version: FrlFormatVersion
    layers: _containers.RepeatedCompositeFieldContainer[LayerRanking]
    def __init__(self, format_version: _Optional[_Union[FrlFormatVersion, str]] = ..., layers: _Optional[_Iterable[_Union[LayerRanking, _Mapping]]] = ...) -> None: ...
