"""snmpsim variation module: status values (line status, oper status, optical power) set live.

A record ``OID|2:controlled|name=proto-conv-01/1/line_status,value=1`` serves ``value``
until the JSON control file maps ``name`` to something else, e.g.
``{"proto-conv-01/1/line_status": 66}``; removing the name (or mapping it to ``null``)
brings the default back.  Works for any tag whose value snmpsim can build from text or a
number: 2 (Integer32), 4 (OCTET STRING), 66 (Gauge32), 67 (TimeTicks) ...  ``value`` is
the last setting and takes the rest of the record, commas included.

The module option names the JSON file; it is the same file ``ratecounter`` reads (written
by ``SimNet.set_values`` / ``set_rates``) and is re-read whenever it changes.

snmpsim loads this file with ``exec`` and provides ``moduleContext`` and ``recordContext``.
"""

import json
import os


def _controls():
    path = moduleContext.get("path")  # noqa: F821
    if not path:
        return {}
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return {}
    if moduleContext.get("mtime") != mtime:  # noqa: F821
        try:
            with open(path) as fh:
                moduleContext["values"] = json.load(fh)  # noqa: F821
            moduleContext["mtime"] = mtime  # noqa: F821
        except (OSError, ValueError):
            pass
    return moduleContext.get("values", {})  # noqa: F821


def _settings(text):
    settings = {}
    rest = text
    while rest:
        if rest.startswith("value="):
            settings["value"] = rest[len("value=") :]
            break
        item, _, rest = rest.partition(",")
        if "=" in item:
            key, _, val = item.partition("=")
            settings[key] = val
    return settings


def init(**context):
    moduleContext["path"] = context.get("options") or ""  # noqa: F821


def variate(oid, tag, value, **context):
    if not context["nextFlag"] and not context["exactMatch"]:
        return context["origOid"], tag, context["errorStatus"]
    if context["setFlag"]:
        return context["origOid"], tag, context["errorStatus"]

    rc = recordContext  # noqa: F821
    if "settings" not in rc:
        rc["settings"] = _settings(value)
        rc["name"] = rc["settings"].get("name", str(oid))
        rc["default"] = rc["settings"].get("value", "")

    current = _controls().get(rc["name"])
    if current is None:
        current = rc["default"]
    base_tag = str(tag).split(":")[0].rstrip("ex")
    if base_tag in ("2", "65", "66", "67", "70"):
        return oid, tag, int(current)
    return oid, tag, str(current)


def shutdown(**context):
    pass
