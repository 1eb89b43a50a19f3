"""snmpsim variation module: counters that advance at a rate the test or demo can change live.

A record ``OID|70:ratecounter|name=cpe-router-01/2/in,rate=1125000,initial=1000000000000``
serves a counter that starts at ``initial`` and grows by ``rate`` per second.  Tag 65
(Counter32) wraps at 2**32 and tag 70 (Counter64) at 2**64, as real agents do.

The module option names a JSON file, ``{"<name>": <rate per second>, ...}``, that is
re-read whenever it changes.  A name found there overrides the record's own ``rate`` from
that moment on; the counter stays continuous, only its slope changes.  A name mapped to
``"reset"`` restarts that counter from zero, as after a device reboot.

snmpsim loads this file with ``exec`` and provides ``moduleContext`` and ``recordContext``.
"""

import json
import os
import time

WRAP = {"65": 2**32, "67": 2**32, "70": 2**64}


def _overrides():
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
                moduleContext["rates"] = json.load(fh)  # noqa: F821
            moduleContext["mtime"] = mtime  # noqa: F821
        except (OSError, ValueError):
            pass
    return moduleContext.get("rates", {})  # noqa: F821


def init(**context):
    moduleContext["path"] = context.get("options") or ""  # noqa: F821


def variate(oid, tag, value, **context):
    if not context["nextFlag"] and not context["exactMatch"]:
        return context["origOid"], tag, context["errorStatus"]
    if context["setFlag"]:
        return context["origOid"], tag, context["errorStatus"]

    rc = recordContext  # noqa: F821
    now = time.time()
    if "settings" not in rc:
        settings = dict(item.split("=", 1) for item in value.split(",") if "=" in item)
        rc["name"] = settings.get("name", str(oid))
        rc["rate"] = float(settings.get("rate", 0))
        rc["value"] = float(settings.get("initial", 0))
        rc["t"] = now
        rc["settings"] = settings

    override = _overrides().get(rc["name"])
    if override == "reset":
        if not rc.get("was_reset"):
            rc["value"], rc["t"], rc["was_reset"] = 0.0, now, True
    else:
        rc["was_reset"] = False
    rate = rc["rate"] if override is None or override == "reset" else float(override)

    rc["value"] += rate * (now - rc["t"])
    rc["t"] = now
    return oid, tag, int(rc["value"]) % WRAP.get(str(tag).split(":")[0], 2**64)


def shutdown(**context):
    pass
