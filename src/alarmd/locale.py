# ruff: noqa: RUF001 - Chinese text takes full-width commas, colons and brackets: they are meant
"""The operator's language: short human-readable summaries and the NOC board's words, in en and zh-CN.

Only what people read follows the locale; machine-readable fields (types, tiers, teams,
classes) stay as they are in every language.
"""

from __future__ import annotations

from typing import Final, Literal

Locale = Literal["en", "zh-CN"]
LOCALES: Final[tuple[Locale, ...]] = ("en", "zh-CN")

_TIER: Final = {
    "en": {"diamond": "diamond", "gold": "gold", "ordinary": "ordinary"},
    "zh-CN": {"diamond": "钻级", "gold": "金级", "ordinary": "普通"},
}
_CLASS: Final = {
    "en": {"transmission": "transmission", "data_anomaly": "data anomaly"},
    "zh-CN": {"transmission": "传输链路中断", "data_anomaly": "用户数据异常"},
}
_ELEMENT: Final = {
    "en": {
        "pe": "PE",
        "aggregation_ring": "aggregation ring",
        "transmission_segment": "transmission segment",
    },
    "zh-CN": {"pe": "PE 设备", "aggregation_ring": "汇聚环", "transmission_segment": "传输段"},
}


def word(locale: Locale, table: Literal["tier", "class", "element"], key: str | None) -> str:
    """A tier, alarm class or element kind in the locale (the key itself if unknown)."""
    words = {"tier": _TIER, "class": _CLASS, "element": _ELEMENT}[table][locale]
    return words.get(key or "", key or "")


def fault_summary(
    locale: Locale,
    *,
    fallback: str,
    alert: str,
    alarm_class: str,
    tier: str | None,
    customer: str | None,
    circuit: str | None,
    where: str,
    cleared: bool,
) -> str:
    """One line about a circuit's fault; in en the rule's own summary (``fallback``)."""
    if locale == "en":
        return f"Recovered: {fallback}" if cleared else fallback
    head = "已恢复：" if cleared else ""
    who = f"{word(locale, 'tier', tier)}客户 {customer} " if customer else ""
    line = f"电路 {circuit} " if circuit else ""
    place = f"（{where}）" if where else ""
    return f"{head}{who}{line}{word(locale, 'class', alarm_class)}告警 {alert}{place}"


def major_summary(
    locale: Locale,
    *,
    element: str,
    element_kind: str,
    alarm_class: str,
    circuits: int,
    customers: int,
    cleared: bool,
) -> str:
    """One line about a major fault on a shared element."""
    kind = word(locale, "element", element_kind)
    cls = word(locale, "class", alarm_class)
    if locale == "zh-CN":
        head = "重大故障已恢复" if cleared else "重大故障"
        return f"{head}：{kind} {element}，{circuits} 条电路（{customers} 个客户）{cls}"
    head = "Major fault recovered" if cleared else "Major fault"
    return f"{head}: {kind} {element}, {circuits} circuits of {customers} customers, {cls}"


#: The NOC board's words, by locale (the page picks them from the ``locale`` of ``/api/v1/board``).
BOARD_TEXT: Final[dict[str, dict[str, str]]] = {
    "en": {
        "title": "alarmd \u00b7 NOC board",
        "firing": "Firing",
        "major": "Major faults",
        "transport_network": "Transport network leads",
        "service_support": "Service support leads",
        "joint": "Joint handling",
        "folded": "Folded",
        "observing": "Observing",
        "customer": "Customer",
        "tier": "Tier",
        "circuit": "Circuit",
        "lead_team": "Lead team",
        "class": "Class",
        "alert": "Alert / summary",
        "lifecycle": "Lifecycle",
        "age": "Age",
        "left": "Time left",
        "empty": "No firing faults",
        "major_tag": "major fault",
        "circuits": "circuits",
        "child": "child",
        "joint_tag": "joint handling",
        "observing_tag": "observing",
        "flapping_tag": "flapping",
        "repeat_tag": "repeat",
        "folded_clock": "folded",
        "to_escalation": "to escalation",
        "to_status_update": "to status update",
        "to_close": "to close",
        "overdue": "OVERDUE ",
        "past_due": "past due: ",
        "refreshed": "refreshed ",
        "not_loaded": "not yet loaded",
        "refresh_failed": "REFRESH FAILED",
        "team_transport_network": "Transport network",
        "team_service_support": "Service support",
        "class_transmission": "Transmission",
        "class_data_anomaly": "Data anomaly",
        "tier_diamond": "diamond",
        "tier_gold": "gold",
        "tier_ordinary": "ordinary",
    },
    "zh-CN": {
        "title": "alarmd \u00b7 集客专线监控",
        "firing": "告警中",
        "major": "重大故障",
        "transport_network": "传送网室主导",
        "service_support": "服务支撑室主导",
        "joint": "联合处理",
        "folded": "已归并",
        "observing": "观察中",
        "customer": "客户",
        "tier": "级别",
        "circuit": "电路",
        "lead_team": "主导室",
        "class": "类别",
        "alert": "告警 / 摘要",
        "lifecycle": "阶段",
        "age": "历时",
        "left": "剩余时限",
        "empty": "当前无告警",
        "major_tag": "重大故障",
        "circuits": "条电路",
        "child": "子告警",
        "joint_tag": "联合处理",
        "observing_tag": "观察中",
        "flapping_tag": "频繁闪断",
        "repeat_tag": "重复故障",
        "folded_clock": "已归并",
        "to_escalation": "距升级",
        "to_status_update": "距进展通报",
        "to_close": "距结单",
        "overdue": "已超时 ",
        "past_due": "已超时：",
        "refreshed": "刷新于 ",
        "not_loaded": "尚未加载",
        "refresh_failed": "刷新失败",
        "team_transport_network": "传送网室",
        "team_service_support": "服务支撑室",
        "class_transmission": "传输",
        "class_data_anomaly": "数据异常",
        "tier_diamond": "钻级",
        "tier_gold": "金级",
        "tier_ordinary": "普通",
    },
}
