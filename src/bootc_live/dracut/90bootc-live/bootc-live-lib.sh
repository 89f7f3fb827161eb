#!/bin/sh
# The root= grammar for the hooks and generators of every bootc-live module, read as the
# runtime's parser (bootc_live.runtime.cmdline.parse_root) reads it; a test holds them equal.

# What root=VALUE names: path, url, docker (a packed root too) or block; invalid (the runtime stops
# the boot and says why); nothing when the root is not bootc-live's.
bootc_live_root_kind() {
    case "$1" in
        bootc-live:docker:// | bootc-live:docker://*" "*) echo invalid ;;
        bootc-live:packed:docker:// | bootc-live:packed:docker://*" "*) echo invalid ;;
        bootc-live:docker://* | bootc-live:packed:docker://*) echo docker ;;
        bootc-live:http://* | bootc-live:https://* | bootc-live:ftp://* | bootc-live:tftp://* | \
            bootc-live:nfs://*) echo url ;;
        bootc-live:packed:http://* | bootc-live:packed:https://* | bootc-live:packed:ftp://* | \
            bootc-live:packed:tftp://* | bootc-live:packed:nfs://*) echo url ;;
        bootc-live:/* | bootc-live:packed:/*) echo path ;;
        bootc-live:block:*/../* | bootc-live:block:*/..) echo invalid ;;
        bootc-live:block:LABEL=:/* | bootc-live:block:UUID=:/* | \
            bootc-live:block:PARTUUID=:/* | bootc-live:block:/dev/:/*) echo invalid ;;
        bootc-live:block:LABEL=?*:/* | bootc-live:block:UUID=?*:/* | \
            bootc-live:block:PARTUUID=?*:/* | bootc-live:block:/dev/?*:/*) echo block ;;
        bootc-live:*) echo invalid ;;
    esac
}

# Whether the command line's root= is bootc-live's (valid or not: the runtime says what is wrong).
bootc_live_root_ours() {
    [ -n "$(bootc_live_root_kind "$(getarg root=)")" ]
}

# Whether the command line's root= is fetched: over the network, from a URL or a registry.
bootc_live_root_fetched() {
    case "$(bootc_live_root_kind "$(getarg root=)")" in
        url | docker) return 0 ;;
    esac
    return 1
}

# Whether the boolean option $1 is on, as the runtime reads booleans (cmdline.parse_bool): a bare
# name or =1, yes, on, true is on; =0, no, off, false or no such option is off. (dracut's
# getargbool would take =false as on.)
bootc_live_option_on() {
    getarg "$1" > /dev/null || return 1
    case "$(getarg "$1")" in
        "" | 1 | [Yy][Ee][Ss] | [Oo][Nn] | [Tt][Rr][Uu][Ee]) return 0 ;;
    esac
    return 1
}

# A second run of the runtime in this initramfs cannot work once the first has freed the
# initramfs's spare files (its own Python files among them: the interpreter would not start).
# systemd's emergency shell starts bootc-live.service again when it is left: say why it stops.
bootc_live_freed() {
    [ -e "${BOOTC_LIVE_RUN:-/run/bootc-live}/freed" ] || return 1
    echo "bootc-live: an earlier attempt in this boot freed the initramfs's unused modules," \
        "tools and the runtime's Python files, so it cannot run again: reboot to try again" \
        "(bootc.keep-modules=1 keeps them, for a retry from the emergency shell)"
}

# dracut's die with message $1. die echoes its message, between double quotes, into a script
# that the emergency shell (rd.shell) sources and echoes it from: a $, ` or " there, from the
# command line or a server's reply that the message quotes, would run as a command or end the
# quotes. Escaped here; where this shell's echo reads \ as an escape too (dash's: \c ends the
# line; bash's does not), the \ of both echoes are doubled as well.
bootc_live_die() {
    # shellcheck disable=SC1003,SC2028,SC2116 # what this shell's echo makes of \\ is the question
    if [ "$(echo '\\')" = '\\' ]; then
        set -- "$(printf '%s\n' "$1" | sed 's/[\\"$`]/\\&/g')"
    else
        set -- "$(printf '%s\n' "$1" | sed 's/\\/\\\\/g; s/[\\"$`]/\\&/g; s/\\/\\\\/g')"
    fi
    die "$1"
}
