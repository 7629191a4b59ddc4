from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TensorMeta(_message.Message):
    __slots__ = ("dtype", "shape", "nbytes")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    nbytes: int
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., nbytes: _Optional[int] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("min_version", "timeout", "life")
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    LIFE_FIELD_NUMBER: _ClassVar[int]
    min_version: int
    timeout: float
    life: str
    def __init__(self, min_version: _Optional[int] = ..., timeout: _Optional[float] = ..., life: _Optional[str] = ...) -> None: ...

class PullRowsRequest(_message.Message):
    __slots__ = ("table", "row_ids")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ROW_IDS_FIELD_NUMBER: _ClassVar[int]
    table: str
    row_ids: bytes
    def __init__(self, table: _Optional[str] = ..., row_ids: _Optional[bytes] = ...) -> None: ...

class TensorChunk(_message.Message):
    __slots__ = ("meta", "version", "data", "life")
    META_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LIFE_FIELD_NUMBER: _ClassVar[int]
    meta: TensorMeta
    version: int
    data: bytes
    life: str
    def __init__(self, meta: _Optional[_Union[TensorMeta, _Mapping]] = ..., version: _Optional[int] = ..., data: _Optional[bytes] = ..., life: _Optional[str] = ...) -> None: ...

class PushHeader(_message.Message):
    __slots__ = ("read_version", "worker", "table", "row_ids", "meta", "life")
    READ_VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ROW_IDS_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    LIFE_FIELD_NUMBER: _ClassVar[int]
    read_version: int
    worker: int
    table: str
    row_ids: bytes
    meta: TensorMeta
    life: str
    def __init__(self, read_version: _Optional[int] = ..., worker: _Optional[int] = ..., table: _Optional[str] = ..., row_ids: _Optional[bytes] = ..., meta: _Optional[_Union[TensorMeta, _Mapping]] = ..., life: _Optional[str] = ...) -> None: ...

class PushChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: PushHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[PushHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class PushReply(_message.Message):
    __slots__ = ("version", "staleness", "applied", "life")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STALENESS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    LIFE_FIELD_NUMBER: _ClassVar[int]
    version: int
    staleness: int
    applied: bool
    life: str
    def __init__(self, version: _Optional[int] = ..., staleness: _Optional[int] = ..., applied: _Optional[bool] = ..., life: _Optional[str] = ...) -> None: ...

class ExchangeRequest(_message.Message):
    __slots__ = ("push", "push_data", "pull")
    PUSH_FIELD_NUMBER: _ClassVar[int]
    PUSH_DATA_FIELD_NUMBER: _ClassVar[int]
    PULL_FIELD_NUMBER: _ClassVar[int]
    push: PushHeader
    push_data: bytes
    pull: PullRequest
    def __init__(self, push: _Optional[_Union[PushHeader, _Mapping]] = ..., push_data: _Optional[bytes] = ..., pull: _Optional[_Union[PullRequest, _Mapping]] = ...) -> None: ...

class ExchangeReply(_message.Message):
    __slots__ = ("push", "values")
    PUSH_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    push: PushReply
    values: TensorChunk
    def __init__(self, push: _Optional[_Union[PushReply, _Mapping]] = ..., values: _Optional[_Union[TensorChunk, _Mapping]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerDoneRequest(_message.Message):
    __slots__ = ("worker",)
    WORKER_FIELD_NUMBER: _ClassVar[int]
    worker: int
    def __init__(self, worker: _Optional[int] = ...) -> None: ...

class LrFactorRequest(_message.Message):
    __slots__ = ("factor",)
    FACTOR_FIELD_NUMBER: _ClassVar[int]
    factor: float
    def __init__(self, factor: _Optional[float] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("shard", "version", "size", "closed", "workers_done", "table_rows", "life", "restored", "replayed")
    class TableRowsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SHARD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    WORKERS_DONE_FIELD_NUMBER: _ClassVar[int]
    TABLE_ROWS_FIELD_NUMBER: _ClassVar[int]
    LIFE_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    shard: int
    version: int
    size: int
    closed: bool
    workers_done: _containers.RepeatedScalarFieldContainer[int]
    table_rows: _containers.ScalarMap[str, int]
    life: str
    restored: int
    replayed: int
    def __init__(self, shard: _Optional[int] = ..., version: _Optional[int] = ..., size: _Optional[int] = ..., closed: _Optional[bool] = ..., workers_done: _Optional[_Iterable[int]] = ..., table_rows: _Optional[_Mapping[str, int]] = ..., life: _Optional[str] = ..., restored: _Optional[int] = ..., replayed: _Optional[int] = ...) -> None: ...
