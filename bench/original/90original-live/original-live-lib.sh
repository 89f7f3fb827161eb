#!/bin/sh
# The root= of the original pipeline, and its console status lines.

# What root=VALUE names: path or url; nothing when the root is not original-live's.
original_live_kind() {
    case "$1" in
        original-live:/*) echo path ;;
        original-live:http://* | original-live:https://* | original-live:ftp://*) echo url ;;
    esac
}

original_live_root_ours() {
    [ -n "$(original_live_kind "$(getarg root=)")" ]
}

# original_live_status STATE [KEY=JSON-VALUE ...]: one console line for bench/boot,
# `original-live: status {"state":…,"uptime":…,"memory_in_use":…,KEY:VALUE…}`, through the
# kernel's log (so it carries the kernel's timestamp). memory_in_use is MemTotal - MemAvailable
# less the free pages on the kernel's per-CPU lists (/proc/zoneinfo's pagesets), in bytes, as
# bootc-live's own status reports it.
# shellcheck disable=SC3043  # local: every shell dracut installs has it
original_live_status() {
    local state="$1" up rest key value total=0 available=0 fields="" pair lists=0 pages=0
    shift
    read -r up rest < /proc/uptime
    while read -r key value rest; do
        case "$key" in
            MemTotal:) total=$value ;;
            MemAvailable:) available=$value ;;
        esac
    done < /proc/meminfo
    while read -r key value rest; do
        case "$key" in
            Node) lists=0 ;;
            pagesets) lists=1 ;;
            count:) [ "$lists" = 1 ] && pages=$((pages + value)) ;;
        esac
    done < /proc/zoneinfo
    available=$((available + pages * 4))
    for pair in "$@"; do
        fields="$fields,\"${pair%%=*}\":${pair#*=}"
    done
    pair="original-live: status {\"state\":\"$state\",\"uptime\":$up"
    pair="$pair,\"memory_in_use\":$(((total - available) * 1024))$fields}"
    { echo "<29>$pair" > /dev/kmsg; } 2> /dev/null || echo "$pair"
}
