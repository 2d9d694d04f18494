from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FormatVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FORMAT_VERSION_UNSPECIFIED: _ClassVar[FormatVersion]
    FORMAT_VERSION_1: _ClassVar[FormatVersion]

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT16: _ClassVar[DType]
    DTYPE_BFLOAT16: _ClassVar[DType]
    DTYPE_FLOAT64: _ClassVar[DType]

class IndexCoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INDEX_CODING_DENSE: _ClassVar[IndexCoding]
    INDEX_CODING_RAW_U32: _ClassVar[IndexCoding]
    INDEX_CODING_BITMAP: _ClassVar[IndexCoding]
    INDEX_CODING_RICE: _ClassVar[IndexCoding]

class ValueCoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALUE_CODING_UNSPECIFIED: _ClassVar[ValueCoding]
    VALUE_CODING_FLOAT32: _ClassVar[ValueCoding]
    VALUE_CODING_FLOAT32_SHUFFLED: _ClassVar[ValueCoding]
    VALUE_CODING_CODES: _ClassVar[ValueCoding]
FORMAT_VERSION_UNSPECIFIED: FormatVersion
FORMAT_VERSION_1: FormatVersion
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT16: DType
DTYPE_BFLOAT16: DType
DTYPE_FLOAT64: DType
INDEX_CODING_DENSE: IndexCoding
INDEX_CODING_RAW_U32: IndexCoding
INDEX_CODING_BITMAP: IndexCoding
INDEX_CODING_RICE: IndexCoding
VALUE_CODING_UNSPECIFIED: ValueCoding
VALUE_CODING_FLOAT32: ValueCoding
VALUE_CODING_FLOAT32_SHUFFLED: ValueCoding
VALUE_CODING_CODES: ValueCoding

class Stage(_message.Message):
    __slots__ = ("name", "args")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    args: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "nnz", "codebook", "scale", "offset", "codebook_bf16")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    NNZ_FIELD_NUMBER: _ClassVar[int]
    CODEBOOK_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CODEBOOK_BF16_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    nnz: int
    codebook: _containers.RepeatedScalarFieldContainer[float]
    scale: float
    offset: float
    codebook_bf16: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., nnz: _Optional[int] = ..., codebook: _Optional[_Iterable[float]] = ..., scale: _Optional[float] = ..., offset: _Optional[float] = ..., codebook_bf16: _Optional[bytes] = ...) -> None: ...

class TensorList(_message.Message):
    __slots__ = ("tensors", "stages", "index_coding", "rice_k", "indices", "value_coding", "code_bits", "values")
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    INDEX_CODING_FIELD_NUMBER: _ClassVar[int]
    RICE_K_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUE_CODING_FIELD_NUMBER: _ClassVar[int]
    CODE_BITS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.RepeatedCompositeFieldContainer[Tensor]
    stages: _containers.RepeatedCompositeFieldContainer[Stage]
    index_coding: IndexCoding
    rice_k: int
    indices: bytes
    value_coding: ValueCoding
    code_bits: int
    values: bytes
    def __init__(self, tensors: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., stages: _Optional[_Iterable[_Union[Stage, _Mapping]]] = ..., index_coding: _Optional[_Union[IndexCoding, str]] = ..., rice_k: _Optional[int] = ..., indices: _Optional[bytes] = ..., value_coding: _Optional[_Union[ValueCoding, str]] = ..., code_bits: _Optional[int] = ..., values: _Optional[bytes] = ...) -> None: ...

class Update(_message.Message):
    __slots__ = ("format_version", "codec", "compression", "body_size", "body")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    BODY_SIZE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    format_version: FormatVersion
    codec: str
    compression: Stage
    body_size: int
    body: bytes
    def __init__(self, format_version: _Optional[_Union[FormatVersion, str]] = ..., codec: _Optional[str] = ..., compression: _Optional[_Union[Stage, _Mapping]] = ..., body_size: _Optional[int] = ..., body: _Optional[bytes] = ...) -> None: ...
