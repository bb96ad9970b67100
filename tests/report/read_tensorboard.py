#!/usr/bin/python3
"""Independent reader for TensorBoard event files, used by tensorboard_test.cpp.

It shares no code with nanguard: CRC32C is computed here from its definition, and the Event
schema is declared here from TensorFlow's field numbers (event.proto, summary.proto,
tensor.proto). Prints one JSON object per record; exits 1 with a message naming the record
on a bad CRC or a bad record, and 77 when python3-protobuf is missing.
"""
import json
import struct
import sys

try:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
except ImportError:
    print("SKIP: python3-protobuf is not installed (apt-get install python3-protobuf)")
    sys.exit(77)


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


F = descriptor_pb2.FieldDescriptorProto


def field(msg, name, number, ftype, type_name=None, repeated=False, oneof=None):
    f = msg.field.add(name=name, number=number, type=ftype,
                      label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    if type_name:
        f.type_name = type_name
    if oneof is not None:
        f.oneof_index = oneof


def build_classes():
    fd = descriptor_pb2.FileDescriptorProto(name="tb_reader.proto", package="tensorflow", syntax="proto3")
    dt = fd.enum_type.add(name="DataType")
    for name, number in (("DT_INVALID", 0), ("DT_FLOAT", 1), ("DT_STRING", 7)):
        dt.value.add(name=name, number=number)
    shape = fd.message_type.add(name="TensorShapeProto")
    dim = shape.nested_type.add(name="Dim")
    field(dim, "size", 1, F.TYPE_INT64)
    field(dim, "name", 2, F.TYPE_STRING)
    field(shape, "dim", 2, F.TYPE_MESSAGE, ".tensorflow.TensorShapeProto.Dim", repeated=True)
    tensor = fd.message_type.add(name="TensorProto")
    field(tensor, "dtype", 1, F.TYPE_ENUM, ".tensorflow.DataType")
    field(tensor, "tensor_shape", 2, F.TYPE_MESSAGE, ".tensorflow.TensorShapeProto")
    field(tensor, "string_val", 8, F.TYPE_BYTES, repeated=True)
    meta = fd.message_type.add(name="SummaryMetadata")
    plugin = meta.nested_type.add(name="PluginData")
    field(plugin, "plugin_name", 1, F.TYPE_STRING)
    field(plugin, "content", 2, F.TYPE_BYTES)
    field(meta, "plugin_data", 1, F.TYPE_MESSAGE, ".tensorflow.SummaryMetadata.PluginData")
    summary = fd.message_type.add(name="Summary")
    value = summary.nested_type.add(name="Value")
    value.oneof_decl.add(name="value")
    field(value, "tag", 1, F.TYPE_STRING)
    field(value, "simple_value", 2, F.TYPE_FLOAT, oneof=0)
    field(value, "tensor", 8, F.TYPE_MESSAGE, ".tensorflow.TensorProto", oneof=0)
    field(value, "metadata", 9, F.TYPE_MESSAGE, ".tensorflow.SummaryMetadata")
    field(summary, "value", 1, F.TYPE_MESSAGE, ".tensorflow.Summary.Value", repeated=True)
    event = fd.message_type.add(name="Event")
    event.oneof_decl.add(name="what")
    field(event, "wall_time", 1, F.TYPE_DOUBLE)
    field(event, "step", 2, F.TYPE_INT64)
    field(event, "file_version", 3, F.TYPE_STRING, oneof=0)
    field(event, "summary", 5, F.TYPE_MESSAGE, ".tensorflow.Summary", oneof=0)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    desc = pool.FindMessageTypeByName("tensorflow.Event")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


def fail(msg):
    print("ERROR: " + msg)
    sys.exit(1)


def main(path):
    Event = build_classes()
    with open(path, "rb") as f:
        data = f.read()
    pos, index = 0, 0
    while pos < len(data):
        if len(data) - pos < 12:
            fail("record %d: truncated header (%d bytes left)" % (index, len(data) - pos))
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if masked(crc32c(header)) != length_crc:
            fail("record %d: length CRC mismatch" % index)
        body = data[pos + 12:pos + 12 + length]
        if len(body) != length or pos + 16 + length > len(data):
            fail("record %d: truncated data" % index)
        (data_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if masked(crc32c(body)) != data_crc:
            fail("record %d: data CRC mismatch" % index)
        event = Event()
        event.ParseFromString(body)
        out = {"step": event.step, "wall_time": event.wall_time}
        which = event.WhichOneof("what")
        if which == "file_version":
            out["file_version"] = event.file_version
        elif which == "summary":
            for v in event.summary.value:
                kind = v.WhichOneof("value")
                if kind == "simple_value":
                    x = v.simple_value
                    out.setdefault("scalars", {})[v.tag] = x if x == x and abs(x) != float("inf") else str(x)
                elif kind == "tensor":
                    texts = [s.decode("utf-8") for s in v.tensor.string_val]
                    out.setdefault("texts", {})[v.tag] = {"text": texts, "plugin": v.metadata.plugin_data.plugin_name,
                                                          "dtype": v.tensor.dtype}
        print(json.dumps(out, allow_nan=True))
        pos += 16 + length
        index += 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: read_tensorboard.py EVENT_FILE")
        sys.exit(2)
    main(sys.argv[1])
