/*
 * alarmd.collector._ber: the decoding half of alarmd.collector.ber, in C.
 *
 * It accepts and rejects exactly what the Python decoder does, with the same BerError reasons,
 * and builds the same objects: the Message, Pdu, TrapV1Fields and VarBind classes of the Python
 * modules, handed over once by configure().  Those are slotted dataclasses; an instance is made
 * by allocating it and filling its slots, which is what their generated __init__ does, without
 * the per-field object.__setattr__ calls.  ber.py falls back to its own decoder when this module
 * is missing or refuses the classes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#define SEQUENCE 0x30
#define INTEGER 0x02
#define OCTET_STRING 0x04
#define NUL 0x05
#define OBJECT_IDENTIFIER 0x06
#define IP_ADDRESS 0x40
#define COUNTER32 0x41
#define GAUGE32 0x42
#define TIMETICKS 0x43
#define OPAQUE 0x44
#define NSAP_ADDRESS 0x45
#define COUNTER64 0x46
#define UINTEGER32 0x47
#define NO_SUCH_OBJECT 0x80
#define NO_SUCH_INSTANCE 0x81
#define END_OF_MIB_VIEW 0x82
#define TRAP_V1 0xA4

#define MAX_SUB_IDS 128
#define MAX_SUB_ID 0xFFFFFFFFULL
#define MAX_PARTIAL ((MAX_SUB_ID + 80) >> 7)
#define MAX_INT_OCTETS 9

/* A class whose instances are built slot by slot. */
typedef struct {
    PyTypeObject *type;
    Py_ssize_t offsets[9];
    int fields;
} Shape;

static Shape varbind_shape, message_shape, pdu_shape, trap_shape;
static PyObject *error_type = NULL;
static PyObject *pdu_types[9]; /* PduType members for tags 0xA0..0xA8 */

enum {
    K_INTEGER, K_OCTET_STRING, K_NULL, K_OID, K_IP, K_COUNTER32, K_GAUGE32, K_TIMETICKS,
    K_OPAQUE, K_COUNTER64, K_NO_SUCH_OBJECT, K_NO_SUCH_INSTANCE, K_END_OF_MIB_VIEW, K_COUNT
};
static const char *kind_text[K_COUNT] = {
    "Integer", "OctetString", "Null", "ObjectIdentifier", "IpAddress", "Counter32", "Gauge32",
    "TimeTicks", "Opaque", "Counter64", "noSuchObject", "noSuchInstance", "endOfMibView",
};
static PyObject *kinds[K_COUNT];

typedef struct {
    const uint8_t *d;
    Py_ssize_t n;
} Buf;

static PyObject *
fail(const char *format, ...)
{
    va_list va;
    va_start(va, format);
    PyObject *text = PyUnicode_FromFormatV(format, va);
    va_end(va);
    if (text != NULL) {
        PyErr_SetObject(error_type, text);
        Py_DECREF(text);
    }
    return NULL;
}

static PyObject *
build(Shape *shape, PyObject **values)
{
    /* Takes a reference to each of values (all non-NULL) whatever the outcome. */
    PyObject *obj = shape->type->tp_alloc(shape->type, 0);
    if (obj == NULL) {
        for (int i = 0; i < shape->fields; i++)
            Py_DECREF(values[i]);
        return NULL;
    }
    for (int i = 0; i < shape->fields; i++)
        *(PyObject **)((char *)obj + shape->offsets[i]) = values[i];
    return obj;
}

/* ------------------------------------------------------------------------- TLV reading */

static int
header(const Buf *b, Py_ssize_t pos, Py_ssize_t end, int *tag, Py_ssize_t *start, Py_ssize_t *stop)
{
    const uint8_t *d = b->d;
    if (pos + 2 > end) {
        fail("truncated header at offset %zd", pos);
        return -1;
    }
    *tag = d[pos];
    if ((d[pos] & 0x1F) == 0x1F) {
        fail("multi-byte tag at offset %zd is not used by SNMP", pos);
        return -1;
    }
    unsigned first = d[pos + 1];
    pos += 2;
    Py_ssize_t length;
    if (first < 0x80) {
        length = first;
    }
    else if (first == 0x80) {
        fail("indefinite length at offset %zd is not allowed in SNMP", pos - 1);
        return -1;
    }
    else {
        unsigned count = first & 0x7F;
        if (count > 4) {
            fail("length of %u octets at offset %zd is too long", count, pos - 1);
            return -1;
        }
        if (pos + (Py_ssize_t)count > end) {
            fail("truncated length at offset %zd", pos - 1);
            return -1;
        }
        uint64_t value = 0;
        for (unsigned i = 0; i < count; i++)
            value = (value << 8) | d[pos + i];
        length = (Py_ssize_t)value;
        pos += count;
    }
    if (pos + length > end) {
        fail("length %zd at offset %zd runs past the end of its container", length, pos);
        return -1;
    }
    *start = pos;
    *stop = pos + length;
    return 0;
}

static int
expect(const Buf *b, Py_ssize_t pos, Py_ssize_t end, int tag, const char *what, Py_ssize_t *start,
       Py_ssize_t *stop)
{
    int got;
    if (header(b, pos, end, &got, start, stop) < 0)
        return -1;
    if (got != tag) {
        fail("expected %s (tag 0x%02x) at offset %zd, got tag 0x%02x", what, tag, pos, got);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------- values */

static PyObject *
as_unsigned(const uint8_t *p, Py_ssize_t size)
{
    return _PyLong_FromByteArray(p, (size_t)size, 0, 0);
}

static PyObject *
decode_int(const Buf *b, Py_ssize_t start, Py_ssize_t stop)
{
    Py_ssize_t size = stop - start;
    if (size == 0)
        return fail("empty integer at offset %zd", start);
    if (size > MAX_INT_OCTETS)
        return fail("integer of %zd octets at offset %zd is too long", size, start);
    const uint8_t *p = b->d + start;
    if (size <= 8) {
        int64_t value = (p[0] & 0x80) ? -1 : 0;
        for (Py_ssize_t i = 0; i < size; i++)
            value = (int64_t)(((uint64_t)value << 8) | p[i]);
        return PyLong_FromLongLong(value);
    }
    return _PyLong_FromByteArray(p, (size_t)size, 0, 1);
}

/* An unsigned number; ``fast`` selects the wording of the range error of ber._varbinds' fast path. */
static PyObject *
decode_unsigned(const Buf *b, Py_ssize_t start, Py_ssize_t stop, uint64_t limit, int kind, int fast)
{
    Py_ssize_t size = stop - start;
    if (size == 0)
        return fail("empty integer at offset %zd", start);
    if (size > MAX_INT_OCTETS)
        return fail("integer of %zd octets at offset %zd is too long", size, start);
    const uint8_t *p = b->d + start;
    int ok = 1;
    uint64_t value = 0;
    if (size == MAX_INT_OCTETS) {
        ok = p[0] == 0;
        p++;
        size--;
    }
    for (Py_ssize_t i = 0; i < size; i++)
        value = (value << 8) | p[i];
    if (ok && value <= limit)
        return PyLong_FromUnsignedLongLong(value);
    PyObject *big = as_unsigned(b->d + start, stop - start);
    if (big == NULL)
        return NULL;
    if (fast)
        fail("%s value %S at offset %zd is out of range", kind_text[kind], big, start);
    else
        fail("unsigned value %S at offset %zd is out of range", big, start);
    Py_DECREF(big);
    return NULL;
}

static PyObject *
decode_oid(const Buf *b, Py_ssize_t start, Py_ssize_t stop)
{
    const uint8_t *raw = b->d + start;
    Py_ssize_t size = stop - start;
    uint64_t subs[MAX_SUB_IDS];
    Py_ssize_t count = 0;
    if (size == 0)
        return fail("empty object identifier at offset %zd", start);
    if (raw[size - 1] & 0x80)
        return fail("object identifier at offset %zd ends inside a sub-identifier", start);
    uint64_t value = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        uint8_t byte = raw[i];
        if (byte & 0x80) {
            if (value == 0 && byte == 0x80)
                return fail("sub-identifier with a leading 0x80 octet at offset %zd", start + i);
            value = (value << 7) | (byte & 0x7F);
            if (value > MAX_PARTIAL)
                return fail("sub-identifier at offset %zd exceeds 32 bits", start + i);
        }
        else {
            if (count < MAX_SUB_IDS)
                subs[count] = (value << 7) | byte;
            count++;
            value = 0;
        }
    }
    if (count >= MAX_SUB_IDS)
        return fail("object identifier at offset %zd has more than %d sub-identifiers", start, MAX_SUB_IDS);
    int over = subs[0] > MAX_SUB_ID + 80;
    for (Py_ssize_t i = 1; i < count && !over; i++)
        over = subs[i] > MAX_SUB_ID;
    if (over)
        return fail("object identifier at offset %zd has a sub-identifier over 32 bits", start);
    char text[MAX_SUB_IDS * 11 + 16];
    char *out = text;
    uint64_t first = subs[0];
    if (first < 40)
        out += sprintf(out, "0.%llu", (unsigned long long)first);
    else if (first < 80)
        out += sprintf(out, "1.%llu", (unsigned long long)(first - 40));
    else
        out += sprintf(out, "2.%llu", (unsigned long long)(first - 80));
    for (Py_ssize_t i = 1; i < count; i++) {
        char digits[12];
        int n = 0;
        uint64_t v = subs[i];
        do {
            digits[n++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        *out++ = '.';
        while (n)
            *out++ = digits[--n];
    }
    return PyUnicode_FromStringAndSize(text, out - text);
}

static PyObject *
decode_ip(const Buf *b, Py_ssize_t start)
{
    const uint8_t *p = b->d + start;
    char text[16];
    int n = snprintf(text, sizeof text, "%u.%u.%u.%u", p[0], p[1], p[2], p[3]);
    return PyUnicode_FromStringAndSize(text, n);
}

/* The kind of a value tag, or -1 for a tag SNMP does not define. */
static int
kind_of(int tag)
{
    switch (tag) {
    case INTEGER: return K_INTEGER;
    case OCTET_STRING: return K_OCTET_STRING;
    case NUL: return K_NULL;
    case OBJECT_IDENTIFIER: return K_OID;
    case IP_ADDRESS: return K_IP;
    case COUNTER32: return K_COUNTER32;
    case GAUGE32: return K_GAUGE32;
    case TIMETICKS: return K_TIMETICKS;
    case OPAQUE: return K_OPAQUE;
    case NSAP_ADDRESS: return K_OCTET_STRING;
    case COUNTER64: return K_COUNTER64;
    case UINTEGER32: return K_GAUGE32;
    case NO_SUCH_OBJECT: return K_NO_SUCH_OBJECT;
    case NO_SUCH_INSTANCE: return K_NO_SUCH_INSTANCE;
    case END_OF_MIB_VIEW: return K_END_OF_MIB_VIEW;
    default: return -1;
    }
}

/* The content of a value whose kind is known; a new reference or NULL with BerError set. */
static PyObject *
decode_content(const Buf *b, int kind, Py_ssize_t start, Py_ssize_t stop)
{
    switch (kind) {
    case K_INTEGER:
        return decode_int(b, start, stop);
    case K_OCTET_STRING:
    case K_OPAQUE:
        return PyBytes_FromStringAndSize((const char *)b->d + start, stop - start);
    case K_OID:
        return decode_oid(b, start, stop);
    case K_IP:
        if (stop - start != 4)
            return fail("IpAddress of %zd octets at offset %zd", stop - start, start);
        return decode_ip(b, start);
    case K_COUNTER32:
    case K_GAUGE32:
    case K_TIMETICKS:
        return decode_unsigned(b, start, stop, 0xFFFFFFFFULL, kind, 0);
    case K_COUNTER64:
        return decode_unsigned(b, start, stop, UINT64_MAX, kind, 0);
    default: /* Null and the three exceptions */
        if (start != stop)
            return fail("%s with content at offset %zd", kind_text[kind], start);
        Py_RETURN_NONE;
    }
}

/* One ObjectSyntax at pos (the general reader); sets *kind and *after. */
static PyObject *
decode_value(const Buf *b, Py_ssize_t pos, Py_ssize_t end, int *kind, Py_ssize_t *after)
{
    int tag;
    Py_ssize_t start, stop;
    if (header(b, pos, end, &tag, &start, &stop) < 0)
        return NULL;
    *kind = kind_of(tag);
    if (*kind < 0)
        return fail("unknown value type (tag 0x%02x) at offset %zd", tag, pos);
    *after = stop;
    return decode_content(b, *kind, start, stop);
}

static int
is_number(int tag)
{
    return tag == INTEGER || tag == COUNTER32 || tag == GAUGE32 || tag == TIMETICKS || tag == COUNTER64 ||
           tag == UINTEGER32;
}

/* The variable-bindings at pos: a tuple of VarBind, with *after at its end. */
static PyObject *
decode_varbinds(const Buf *b, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t *after_all)
{
    const uint8_t *d = b->d;
    Py_ssize_t start, stop;
    if (expect(b, pos, end, SEQUENCE, "variable-bindings", &start, &stop) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    pos = start;
    while (pos < stop) {
        Py_ssize_t vb_stop, name_start, name_stop, after;
        int kind;
        PyObject *value;
        if (pos + 6 <= stop && d[pos] == SEQUENCE && d[pos + 1] < 0x80 && d[pos + 2] == OBJECT_IDENTIFIER &&
            d[pos + 3] < 0x80) {
            vb_stop = pos + 2 + d[pos + 1];
            name_start = pos + 4;
            name_stop = name_start + d[pos + 3];
            if (vb_stop > stop || name_stop + 2 > vb_stop) {
                fail("variable binding at offset %zd runs past the end of its container", pos);
                goto error;
            }
            int tag = d[name_stop], size = d[name_stop + 1];
            kind = kind_of(tag);
            if (size < 0x80 && kind >= 0) {
                after = name_stop + 2 + size;
                if (after > vb_stop) {
                    fail("length %d at offset %zd runs past the end of its container", size, name_stop + 2);
                    goto error;
                }
                if (is_number(tag) && size > 0 && size <= MAX_INT_OCTETS && d[name_stop + 2] < 0x80) {
                    if (kind == K_INTEGER)
                        value = decode_int(b, name_stop + 2, after);
                    else
                        value = decode_unsigned(b, name_stop + 2, after,
                                                kind == K_COUNTER64 ? UINT64_MAX : 0xFFFFFFFFULL, kind, 1);
                }
                else {
                    value = decode_content(b, kind, name_stop + 2, after);
                }
            }
            else {
                value = decode_value(b, name_stop, vb_stop, &kind, &after);
            }
        }
        else {
            Py_ssize_t vb_start;
            if (expect(b, pos, stop, SEQUENCE, "variable binding", &vb_start, &vb_stop) < 0)
                goto error;
            if (expect(b, vb_start, vb_stop, OBJECT_IDENTIFIER, "name", &name_start, &name_stop) < 0)
                goto error;
            value = decode_value(b, name_stop, vb_stop, &kind, &after);
        }
        if (value == NULL)
            goto error;
        if (after != vb_stop) {
            Py_DECREF(value);
            fail("trailing octets in the variable binding at offset %zd", pos);
            goto error;
        }
        PyObject *oid = decode_oid(b, name_start, name_stop);
        if (oid == NULL) {
            Py_DECREF(value);
            goto error;
        }
        Py_INCREF(kinds[kind]);
        PyObject *fields[3] = {oid, kinds[kind], value};
        PyObject *vb = build(&varbind_shape, fields);
        if (vb == NULL)
            goto error;
        int rc = PyList_Append(out, vb);
        Py_DECREF(vb);
        if (rc < 0)
            goto error;
        pos = vb_stop;
    }
    *after_all = stop;
    PyObject *result = PyList_AsTuple(out);
    Py_DECREF(out);
    return result;
error:
    Py_DECREF(out);
    return NULL;
}

/* The PDU at pos: a new Pdu, with *after at its end. */
static PyObject *
decode_pdu_at(const Buf *b, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t *after_pdu)
{
    int tag;
    Py_ssize_t start, stop, s, p;
    PyObject *request_id = NULL, *error_status = NULL, *error_index = NULL, *trap = NULL, *varbinds = NULL;
    if (header(b, pos, end, &tag, &start, &stop) < 0)
        return NULL;
    if (tag < 0xA0 || tag > 0xA8)
        return fail("unknown PDU type (tag 0x%02x) at offset %zd", tag, pos);
    if (tag == TRAP_V1) {
        PyObject *f[5] = {NULL, NULL, NULL, NULL, NULL};
        if (expect(b, start, stop, OBJECT_IDENTIFIER, "enterprise", &s, &p) < 0 ||
            (f[0] = decode_oid(b, s, p)) == NULL)
            goto trap_error;
        if (expect(b, p, stop, IP_ADDRESS, "agent-addr", &s, &p) < 0)
            goto trap_error;
        if (p - s != 4) {
            fail("agent-addr of %zd octets at offset %zd", p - s, s);
            goto trap_error;
        }
        if ((f[1] = decode_ip(b, s)) == NULL)
            goto trap_error;
        if (expect(b, p, stop, INTEGER, "generic-trap", &s, &p) < 0 || (f[2] = decode_int(b, s, p)) == NULL)
            goto trap_error;
        if (expect(b, p, stop, INTEGER, "specific-trap", &s, &p) < 0 || (f[3] = decode_int(b, s, p)) == NULL)
            goto trap_error;
        if (expect(b, p, stop, TIMETICKS, "time-stamp", &s, &p) < 0 ||
            (f[4] = decode_unsigned(b, s, p, 0xFFFFFFFFULL, K_TIMETICKS, 0)) == NULL)
            goto trap_error;
        if ((trap = build(&trap_shape, f)) == NULL)
            return NULL;
        request_id = PyLong_FromLong(0);
        error_status = PyLong_FromLong(0);
        error_index = PyLong_FromLong(0);
        goto varbinds;
    trap_error:
        for (int i = 0; i < 5; i++)
            Py_XDECREF(f[i]);
        return NULL;
    }
    if (expect(b, start, stop, INTEGER, "request-id", &s, &p) < 0 || (request_id = decode_int(b, s, p)) == NULL)
        goto error;
    if (expect(b, p, stop, INTEGER, "error-status", &s, &p) < 0 ||
        (error_status = decode_int(b, s, p)) == NULL)
        goto error;
    if (expect(b, p, stop, INTEGER, "error-index", &s, &p) < 0 || (error_index = decode_int(b, s, p)) == NULL)
        goto error;
    Py_INCREF(Py_None);
    trap = Py_None;
varbinds:;
    Py_ssize_t after;
    if ((varbinds = decode_varbinds(b, p, stop, &after)) == NULL)
        goto error;
    if (after != stop) {
        fail("trailing octets in the PDU at offset %zd", after);
        goto error;
    }
    PyObject *raw = PyBytes_FromStringAndSize((const char *)b->d + p, after - p);
    if (raw == NULL)
        goto error;
    PyObject *type = pdu_types[tag - 0xA0];
    Py_INCREF(type);
    PyObject *fields[7] = {type, request_id, error_status, error_index, varbinds, trap, raw};
    *after_pdu = stop;
    return build(&pdu_shape, fields);
error:
    Py_XDECREF(request_id);
    Py_XDECREF(error_status);
    Py_XDECREF(error_index);
    Py_XDECREF(trap);
    Py_XDECREF(varbinds);
    return NULL;
}

static PyObject *
decode_pdu_buf(const Buf *b)
{
    Py_ssize_t stop;
    PyObject *pdu = decode_pdu_at(b, 0, b->n, &stop);
    if (pdu != NULL && stop != b->n) {
        Py_CLEAR(pdu);
        fail("trailing octets after the PDU at offset %zd", stop);
    }
    return pdu;
}

static PyObject *
decode_message_buf(const Buf *b)
{
    Py_ssize_t start, stop, s, p, after;
    if (expect(b, 0, b->n, SEQUENCE, "message", &start, &stop) < 0)
        return NULL;
    if (stop != b->n)
        return fail("trailing octets after the message at offset %zd", stop);
    if (expect(b, start, stop, INTEGER, "version", &s, &p) < 0)
        return NULL;
    PyObject *version = decode_int(b, s, p);
    if (version == NULL)
        return NULL;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(version, &overflow);
    if (overflow || (v != 0 && v != 1)) {
        fail("version %S is not SNMPv1 or v2c", version);
        Py_DECREF(version);
        return NULL;
    }
    if (expect(b, p, stop, OCTET_STRING, "community", &s, &p) < 0) {
        Py_DECREF(version);
        return NULL;
    }
    PyObject *pdu = decode_pdu_at(b, p, stop, &after);
    if (pdu == NULL) {
        Py_DECREF(version);
        return NULL;
    }
    if (after != stop) {
        Py_DECREF(version);
        Py_DECREF(pdu);
        return fail("trailing octets after the PDU at offset %zd", after);
    }
    PyObject *community = PyBytes_FromStringAndSize((const char *)b->d + s, p - s);
    if (community == NULL) {
        Py_DECREF(version);
        Py_DECREF(pdu);
        return NULL;
    }
    /* Message(version, community, pdu_type, request_id, error_status, error_index, varbinds, trap,
       varbind_bytes): the Pdu's seven fields, in order, after the first two. */
    PyObject *fields[9] = {version, community};
    for (int i = 0; i < 7; i++) {
        fields[2 + i] = *(PyObject **)((char *)pdu + pdu_shape.offsets[i]);
        Py_INCREF(fields[2 + i]);
    }
    Py_DECREF(pdu);
    return build(&message_shape, fields);
}

/* Run ``decode`` over the octets of any bytes-like ``arg``. */
static PyObject *
with_buffer(PyObject *arg, PyObject *(*decode)(const Buf *))
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Buf b = {view.buf, view.len};
    PyObject *result = decode(&b);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
py_decode_message(PyObject *module, PyObject *arg)
{
    return with_buffer(arg, decode_message_buf);
}

static PyObject *
py_decode_pdu(PyObject *module, PyObject *arg)
{
    return with_buffer(arg, decode_pdu_buf);
}

/* ------------------------------------------------------------------------- configuration */

static int
shape_of(Shape *shape, PyObject *type, const char *const *names, int count)
{
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "expected a class");
        return -1;
    }
    PyTypeObject *tp = (PyTypeObject *)type;
    if (tp->tp_alloc == NULL || tp->tp_dictoffset != 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a slotted class without __dict__", tp->tp_name);
        return -1;
    }
    for (int i = 0; i < count; i++) {
        PyObject *descr = PyObject_GetAttrString(type, names[i]);
        if (descr == NULL)
            return -1;
        int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        if (ok)
            shape->offsets[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", tp->tp_name, names[i]);
            return -1;
        }
    }
    Py_INCREF(type);
    Py_XSETREF(shape->type, tp);
    shape->fields = count;
    return 0;
}

static PyObject *
py_configure(PyObject *module, PyObject *args)
{
    PyObject *varbind, *message, *pdu, *trap, *error, *types;
    if (!PyArg_ParseTuple(args, "OOOOOO!:configure", &varbind, &message, &pdu, &trap, &error, &PyTuple_Type,
                          &types))
        return NULL;
    static const char *const vb_names[] = {"oid", "type", "value"};
    static const char *const msg_names[] = {"version", "community", "pdu_type", "request_id", "error_status",
                                            "error_index", "varbinds", "trap", "varbind_bytes"};
    static const char *const pdu_names[] = {"pdu_type", "request_id", "error_status", "error_index",
                                            "varbinds", "trap", "varbind_bytes"};
    static const char *const trap_names[] = {"enterprise", "agent_address", "generic", "specific",
                                             "timestamp"};
    if (PyTuple_GET_SIZE(types) != 9) {
        PyErr_SetString(PyExc_ValueError, "expected the nine PDU types 0xA0..0xA8");
        return NULL;
    }
    if (shape_of(&varbind_shape, varbind, vb_names, 3) < 0 || shape_of(&message_shape, message, msg_names, 9) < 0 ||
        shape_of(&pdu_shape, pdu, pdu_names, 7) < 0 || shape_of(&trap_shape, trap, trap_names, 5) < 0)
        return NULL;
    for (int i = 0; i < 9; i++) {
        PyObject *t = PyTuple_GET_ITEM(types, i);
        Py_INCREF(t);
        Py_XSETREF(pdu_types[i], t);
    }
    Py_INCREF(error);
    Py_XSETREF(error_type, error);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", py_configure, METH_VARARGS,
     "configure(VarBind, Message, Pdu, TrapV1Fields, BerError, pdu_types): the classes to build."},
    {"decode_message", py_decode_message, METH_O, "Decode an SNMPv1 or v2c message (see alarmd.collector.ber)."},
    {"decode_pdu", py_decode_pdu, METH_O, "Decode one BER-encoded PDU (see alarmd.collector.ber)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_ber", "The decoding half of alarmd.collector.ber, in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__ber(void)
{
    for (int i = 0; i < K_COUNT; i++) {
        kinds[i] = PyUnicode_InternFromString(kind_text[i]);
        if (kinds[i] == NULL)
            return NULL;
    }
    return PyModule_Create(&module_def);
}
