#!/bin/sh
# Start and stop the long-running processes of `make server` / `make worker`, each in a
# process group of its own. POSIX sh: make runs it with /bin/sh, which is dash on Debian
# (no `kill -- -PGID` there; `kill -SIG -PGID` works in dash and bash alike).
#
#   service.sh start   NAME PIDFILE LOGFILE COMMAND...   start COMMAND in a new session
#   service.sh running NAME PIDFILE                      exit 0 if it runs, 1 if not
#   service.sh stop    NAME PIDFILE SIGNAL TIMEOUT [CHILD_SIGNAL]
#                                                        stop it and everything it started
#
# The pid file holds "PID STARTTIME": the session leader's pid, which is also its process
# group id, and its start time (/proc/PID/stat field 22), so a pid the kernel has given
# to an unrelated process since is recognised and never signalled.
#
# `stop` sends SIGNAL to the group, waits up to TIMEOUT seconds until no live process of
# the group (nor of the sessions its processes started, e.g. a worker's flow runs) is
# left, then sends SIGKILL and waits 5 s more. With CHILD_SIGNAL, the groups of those
# other sessions get CHILD_SIGNAL first and are waited for (TIMEOUT) before the leader
# gets SIGNAL. Zombies count as gone (PID 1 may not reap them: it does not on these
# machines). It says what it did; it exits 1, keeping the pid file, if something
# survives or cannot be signalled.
set -u

# Every process as "pid state ppid pgrp", from /proc (procps may not be installed).
procs() {
    # one cat for all (a process that exits between the glob and the read is skipped)
    cat /proc/[0-9]*/stat 2>/dev/null | awk '{ pid = $1; sub(/^.*\) /, ""); print pid, $1, $2, $3 }'
}

starttime() {  # start time of pid $1 in clock ticks since boot, or nothing
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $20 }'
}

# Live (non-zombie) processes of the groups $1 (ids separated by spaces) and their
# descendants, whatever group those are in, as "pid pgrp" lines.
tree() {
    procs | awk -v groups="$1" '
        BEGIN { n = split(groups, g, " "); for (i = 1; i <= n; i++) wanted[g[i]] = 1 }
        { state[$1] = $2; parent[$1] = $3; group[$1] = $4 }
        END {
            # mark the groups, then repeatedly every child of a marked process
            for (p in group) if (group[p] in wanted) mark[p] = 1
            do {
                added = 0
                for (p in parent) if (!(p in mark) && (parent[p] in mark)) { mark[p] = 1; added = 1 }
            } while (added)
            for (p in mark) if (state[p] != "Z" && state[p] != "X") print p, group[p]
        }'
}

read_pidfile() {  # sets pid and start from $1; returns 1 if the file is unusable
    pid= start=
    [ -f "$1" ] || return 1
    read -r pid start < "$1" 2>/dev/null || true
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    return 0
}

# Is the group recorded in pid file $1 still ours and alive? Sets pid, start, why.
ours() {
    why=
    if ! read_pidfile "$1"; then why="unreadable pid file"; return 1; fi
    now=$(starttime "$pid")
    if [ -n "$now" ] && [ -n "$start" ] && [ "$now" != "$start" ]; then
        # the leader's pid now belongs to a process started later: not ours
        why="pid $pid now belongs to another process"
        return 1
    fi
    # The leader may be gone while processes of its group live on; the kernel does not
    # reuse a pid that is still some group's id, so such a group is still ours.
    if [ -z "$(tree "$pid")" ]; then why="no process of group $pid is running"; return 1; fi
    return 0
}

cmd_start() {
    name=$1 pidfile=$2 log=$3
    shift 3
    if ours "$pidfile"; then
        echo "$name: already running (pid $pid)"
        return 0
    fi
    rm -f "$pidfile" "$pidfile.new"
    # A shell without job control starts background commands with SIGINT and SIGQUIT
    # ignored, and a process cannot undo that for its children once it has started
    # with them ignored: a worker started so never stops on SIGINT (Prefect's handler
    # restores the inherited "ignore" and re-sends the signal to itself). GNU env
    # resets them before the command starts.
    reset=
    if env --default-signal=INT,QUIT true 2> /dev/null; then reset="env --default-signal=INT,QUIT"; fi
    # The child writes its own pid (setsid forks when its caller leads a group, so $!
    # would be the wrong one), then becomes COMMAND: the session and group leader.
    $reset setsid sh -c 'echo $$ > "$0.tmp" && mv "$0.tmp" "$0.new" && exec "$@"' "$pidfile" "$@" \
        < /dev/null > "$log" 2>&1 &
    i=0
    while [ ! -s "$pidfile.new" ]; do
        i=$((i + 1))
        if [ "$i" -gt 100 ]; then
            echo "$name: did not start (no pid after 10 s); see $log" >&2
            return 1
        fi
        sleep 0.1
    done
    read -r pid < "$pidfile.new"
    echo "$pid $(starttime "$pid")" > "$pidfile"
    rm -f "$pidfile.new"
    echo "$name: started (pid $pid, log: $log)"
}

cmd_running() {
    ours "$2"
}

# Send signal $1 to every group in $2 (a list of group ids); prints failures. Its
# variables are prefixed: sh has no local variables, and callers have a $sig.
signal_groups() {
    _sig=$1 _failed=0
    for _g in $2; do
        if ! _err=$(kill "-$_sig" "-$_g" 2>&1); then
            # the group may have exited since we listed it: only a live group is a failure
            if [ -n "$(tree "$_g")" ]; then
                echo "cannot send SIG$_sig to process group $_g: ${_err##*: }"
                _failed=1
            fi
        fi
    done
    return $_failed
}

groups_of() {  # the distinct groups of tree "$1", space-separated
    tree "$1" | awk '{ print $2 }' | sort -u | tr '\n' ' '
}

# Wait up to $1 seconds until no process of the groups in $groups (and their
# descendants) is alive; groups found meanwhile are added to $groups. 0 if all gone.
wait_gone() {
    deadline=$(($(date +%s) + $1))
    while :; do
        found=$(tree "$groups")
        [ -z "$found" ] && return 0
        groups=$(printf '%s\n' $groups $(printf '%s\n' "$found" | awk '{ print $2 }') | sort -u | tr '\n' ' ')
        [ "$(date +%s)" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

alive_pids() {
    tree "$groups" | awk '{ print $1 }' | sort -n | tr '\n' ' ' | sed 's/ $//'
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

since() {  # seconds since $1 (from now_ms), one decimal
    ms=$(($(now_ms) - $1))
    echo "$((ms / 1000)).$((ms % 1000 / 100)) s"
}

cmd_stop() {
    name=$1 pidfile=$2 sig=$3 timeout=$4 child_sig=${5:-}
    if [ ! -e "$pidfile" ]; then
        echo "$name: not running (no pid file)"
        return 0
    fi
    if ! ours "$pidfile"; then
        rm -f "$pidfile"
        echo "$name: not running ($why); removed stale pid file $pidfile"
        return 0
    fi
    t0=$(now_ms)
    if [ -n "$child_sig" ]; then
        # The groups its descendants lead (a worker runs each flow run in a session of
        # its own) get CHILD_SIGNAL first, and are waited for, while the leader is still
        # there to report on them.
        groups=$(groups_of "$pid" | tr ' ' '\n' | grep -vx "$pid" | tr '\n' ' ' || true)
        if [ -n "${groups% }" ]; then
            signal_groups "$child_sig" "$groups" > /dev/null || true
            if wait_gone "$timeout"; then
                echo "$name: its children (process groups ${groups% }) ended on SIG$child_sig ($(since "$t0"))"
            else
                echo "$name: its children still run $timeout s after SIG$child_sig (pids $(alive_pids))"
            fi
        fi
    fi
    # The leader's group and the groups of the sessions it started: listed now, as they
    # lose their parent later.
    groups=$(groups_of "$pid")
    if ! msg=$(signal_groups "$sig" "$pid"); then
        echo "$name: FAILED to stop (pid $pid): $msg; pid file kept" >&2
        return 1
    fi
    if wait_gone "$timeout"; then
        echo "$name: stopped (pid $pid, SIG$sig, $(since "$t0"))"
        rm -f "$pidfile"
        return 0
    fi
    echo "$name: still running $timeout s after SIG$sig (pids $(alive_pids)); sending SIGKILL"
    msg=$(signal_groups KILL "$groups")
    if wait_gone 5; then
        echo "$name: stopped by SIGKILL (pid $pid, $(since "$t0"))"
        rm -f "$pidfile"
        return 0
    fi
    echo "$name: FAILED to stop: pids $(alive_pids) still alive after SIGKILL${msg:+ ($msg)}; pid file kept" >&2
    return 1
}

case "${1:-}" in
start) shift; cmd_start "$@" ;;
running) shift; cmd_running "$@" ;;
stop) shift; cmd_stop "$@" ;;
*)
    echo "usage: $0 start NAME PIDFILE LOG COMMAND... | running NAME PIDFILE | stop NAME PIDFILE SIGNAL TIMEOUT [CHILD_SIGNAL]" >&2
    exit 2
    ;;
esac
