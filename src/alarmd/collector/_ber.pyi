from alarmd.collector.ber import Message, Pdu

def configure(
    varbind: type,
    message: type,
    pdu: type,
    trap: type,
    error: type[Exception],
    pdu_types: tuple[object, ...],
    /,
) -> None: ...
def decode_message(data: bytes, /) -> Message: ...
def decode_pdu(data: bytes, /) -> Pdu: ...
