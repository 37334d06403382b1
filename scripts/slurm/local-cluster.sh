#!/usr/bin/env bash
# A throwaway one-node SLURM cluster on this machine, to run `scripts/sweep.sh --slurm` for
# real (tests/test_slurm.py). Debian/Ubuntu, as root; systemd is not needed: the daemons
# are started directly and stopped by the process ids they wrote.
#
# Usage:   scripts/slurm/local-cluster.sh start|stop|status
#   start    install slurm-wlm and munge with apt-get if missing; write <dir>/slurm.conf for
#            one node 'localhost' (its CPUs and memory as `slurmd -C` reports them) in the
#            partition 'debug'; create /etc/munge/munge.key if there is none; start munged
#            (as user munge), slurmctld and slurmd (as root, SlurmUser=root); wait until
#            sinfo shows the node idle. Already running: says so, exit 0.
#   stop     cancel the cluster's jobs, stop slurmd, slurmctld and munged, and check that
#            none of them (nor a job step) is left running. Not running: says so, exit 0.
#   status   each daemon's process id, sinfo and squeue; exit 3 when one is not running.
#
# Clients (sbatch, squeue, sinfo) read /etc/slurm/slurm.conf, which start makes a link to
# <dir>/slurm.conf when there is none (stop removes it); where a slurm.conf is already
# there, start leaves it and says to export SLURM_CONF=<dir>/slurm.conf.
#
# Environment: FLATMINIMA_SLURM_DIR, the private folder for the config, state, spool, logs,
# pid files and munge socket (default /run/flatminima-slurm); FLATMINIMA_SLURM_TIMEOUT,
# seconds to wait for the node to be idle or the daemons to stop (default 60).
# Ports: SLURM's defaults, 6817 (slurmctld) and 6818 (slurmd).
set -euo pipefail

PROG=scripts/slurm/local-cluster.sh
DIR=${FLATMINIMA_SLURM_DIR:-/run/flatminima-slurm}
TIMEOUT=${FLATMINIMA_SLURM_TIMEOUT:-60}
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge/munge.socket.2
SYSTEM_CONF=/etc/slurm/slurm.conf
KEY=/etc/munge/munge.key
NODE=localhost
DAEMONS=(munged slurmctld slurmd)  # in starting order; stopped in the reverse one

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

say() { echo "local-cluster: $*"; }

die() {  # one line on stderr, exit 1
    echo "local-cluster: error: $*" >&2
    exit 1
}

pid_file() {
    case $1 in
        munged) echo "$DIR/munge/munged.pid" ;;
        *) echo "$DIR/$1.pid" ;;
    esac
}

log_file() {
    case $1 in
        munged) echo "$DIR/munge/munged.log" ;;
        *) echo "$DIR/log/$1.log" ;;
    esac
}

running_pid() {  # daemon -> its process id, when the one its pid file names is alive
    local file pid
    file=$(pid_file "$1")
    [[ -r $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    # the name too: a stale pid file may name a process id the kernel has given another
    # process since; a zombie has exited already
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    echo "$pid"
}

show_logs() {  # the last lines of each daemon's log, to say why something failed
    local daemon
    for daemon in "${DAEMONS[@]}"; do
        [[ -r $(log_file "$daemon") ]] || continue
        echo "--- $(log_file "$daemon") (last lines)" >&2
        tail -n 15 "$(log_file "$daemon")" >&2
    done
}

client() {  # a SLURM client command against this cluster, whichever slurm.conf is the system's
    SLURM_CONF=$CONF "$@"
}

# ------------------------------------------------------------------------ start
install_packages() {
    local missing=() cmd
    for cmd in munged mungekey slurmctld slurmd slurmstepd sbatch squeue sinfo scontrol scancel; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null 2>&1 ||
        die "${missing[*]} not found and there is no apt-get: install SLURM and munge yourself"
    say "installing slurm-wlm and munge with apt-get (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    # a stale package list (a container image's) names versions the mirror no longer has
    if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >"$DIR/apt.log" 2>&1; then
        apt-get update -q >>"$DIR/apt.log" 2>&1 || true
        apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$DIR/apt.log" 2>&1 ||
            die "apt-get install slurm-wlm munge failed: see $DIR/apt.log"
    fi
}

make_dirs() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/munge"
    chmod 0755 "$DIR"
    # munged refuses a socket folder or log file others may write, and runs as user munge
    chown munge:munge "$DIR/munge"
    chmod 0755 "$DIR/munge"
}

munge_key() {
    [[ -s $KEY ]] && return 0
    say "creating $KEY"
    mkdir -p "$(dirname "$KEY")"
    mungekey --create --keyfile="$KEY"
    chown munge:munge "$KEY"
    chmod 0400 "$KEY"  # munged refuses a key others may read
}

write_conf() {  # <dir>/slurm.conf: one node, this machine's hardware as slurmd -C sees it
    local node
    node=$(slurmd -C)
    node=${node%%$'\n'*}  # its first line (the second is the uptime)
    [[ $node == NodeName=* ]] || die "slurmd -C printed no node line: '$node'"
    node=${node#NodeName=* }  # its own host name goes: the node is called localhost
    cat >"$CONF.tmp" <<EOF
# written by $PROG: a one-node cluster for tests; rewritten by each start
ClusterName=flatminima
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file slurmd)
SlurmctldLogFile=$(log_file slurmctld)
SlurmdLogFile=$(log_file slurmd)
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: the daemons run directly, in a container as on a laptop
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# a node that was down (e.g. the machine restarted) comes back by itself
ReturnToService=2
# a cancelled task's processes get SIGTERM, then SIGKILL 5 s later (default 30 s)
KillWait=5
# no mail is sent from here (Debian's default, /usr/bin/mail, is not installed)
MailProg=/bin/true
# finished jobs stay visible to scontrol for an hour (there is no accounting for sacct)
MinJobAge=3600
NodeName=$NODE NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

link_system_conf() {  # so that plain sbatch, squeue, sinfo find this cluster
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]]; then
        return 0
    elif [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]]; then
        say "note: $SYSTEM_CONF is another cluster's: export SLURM_CONF=$CONF for this one"
    else
        mkdir -p "$(dirname "$SYSTEM_CONF")"
        ln -s "$CONF" "$SYSTEM_CONF"
    fi
}

start_daemon() {
    local daemon=$1
    if running_pid "$daemon" >/dev/null; then
        return 0
    fi
    # each daemon forks into the background once it is set up, and exits non-zero before
    # that when it cannot start
    case $daemon in
        munged)
            runuser -u munge -- munged --socket="$SOCKET" --pid-file="$(pid_file munged)" \
                --log-file="$(log_file munged)" --seed-file="$DIR/munge/munged.seed"
            ;;
        slurmctld) slurmctld -f "$CONF" ;;
        slurmd) slurmd -f "$CONF" -N "$NODE" ;;
    esac || {
        show_logs
        die "$daemon did not start (its log is above)"
    }
    # slurmctld writes its pid file before it binds its port, and may exit there (the port
    # taken by another cluster's): it has started once it answers
    if ! WHILE=$daemon wait_for "$daemon to write its pid file" running_pid "$daemon" ||
        { [[ $daemon == slurmctld ]] && ! WHILE=slurmctld wait_for "slurmctld to answer" \
            client scontrol ping; }; then
        show_logs
        die "$daemon did not stay up (its log is above)"
    fi
    say "$daemon started (pid $(running_pid "$daemon"))"
}

wait_for() {  # what, command...: run the command every half second until it succeeds; give
    # up after TIMEOUT s, or at once when the daemon named by WHILE (if set) has exited
    local what=$1 deadline=$((SECONDS + TIMEOUT)) dead=0
    shift
    until "$@" >/dev/null 2>&1; do
        # three looks in a row: a daemon re-executing itself has no command line for a moment
        if [[ -n ${WHILE:-} ]] && ! running_pid "$WHILE" >/dev/null && ! launched "$WHILE"; then
            if ((++dead == 3)); then
                echo "local-cluster: $WHILE exited while waiting for $what" >&2
                return 1
            fi
        else
            dead=0
        fi
        if ((SECONDS >= deadline)); then
            echo "local-cluster: timed out after $TIMEOUT s waiting for $what" >&2
            return 1
        fi
        sleep 0.5
    done
}

launched() {  # daemon: a process of it runs with this cluster's folder in its command line
    # (before it has written its pid file)
    pgrep -f -- "^(\S*/)?$1 .*$DIR/" >/dev/null
}

node_state() { client sinfo -h -N -n "$NODE" -o %T 2>/dev/null; }

node_idle() { [[ $(node_state) == idle ]]; }

all_running() {
    local daemon
    for daemon in "${DAEMONS[@]}"; do running_pid "$daemon" >/dev/null || return 1; done
}

start() {
    [[ $(id -u) == 0 ]] || die "start needs root (it installs packages and runs the daemons as root)"
    if all_running && node_state | grep -qE '^(idle|mixed|allocated)'; then
        say "already running ($CONF); node $NODE is $(node_state)"
        link_system_conf
        return 0
    fi
    mkdir -p "$DIR"
    install_packages
    make_dirs
    munge_key
    # a daemon left from an earlier start keeps the config it read: write it only when
    # none runs
    if ! running_pid slurmctld >/dev/null && ! running_pid slurmd >/dev/null; then
        write_conf
    fi
    link_system_conf
    local daemon
    for daemon in "${DAEMONS[@]}"; do start_daemon "$daemon"; done
    if ! WHILE=slurmd wait_for "node $NODE to be idle" node_idle; then
        echo "node $NODE: $(node_state || echo 'no answer from slurmctld')" >&2
        client sinfo -R >&2 || true
        show_logs
        die "the cluster did not come up (see above); $PROG stop cleans up"
    fi
    say "running: node $NODE idle in partition debug ($CONF)"
}

# ------------------------------------------------------------------------ stop
cancel_jobs() {  # so that no job step (slurmstepd and its processes) outlives slurmd
    local jobs
    running_pid slurmctld >/dev/null || return 0
    jobs=$(client squeue -h -o %A 2>/dev/null | sort -u | paste -sd ' ') || return 0
    [[ -n $jobs ]] || return 0
    say "cancelling jobs $jobs"
    # shellcheck disable=SC2086  # one word per job id
    client scancel $jobs || true
    wait_for "the jobs to end" no_jobs || true
}

no_jobs() { [[ -z $(client squeue -h -o %A) ]]; }

stop_daemon() {
    local daemon=$1 pid
    pid=$(running_pid "$daemon") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for "$daemon (pid $pid) to stop" gone "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait_for "$daemon (pid $pid) to be killed" gone "$pid" || true
    fi
    # its parent is init, which reaps it soon: wait for that, so that pgrep no longer lists it
    TIMEOUT=5 wait_for "$daemon (pid $pid) to be reaped" test ! -e "/proc/$pid" 2>/dev/null || true
    rm -f "$(pid_file "$daemon")"
    say "$daemon stopped (pid $pid)"
}

gone() {  # pid: it has exited (a zombie counts as gone)
    [[ ! -e /proc/$1 || $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]
}

leftovers() {  # this cluster's processes still alive: its daemons (their command lines name
    # its folder) and job steps
    {
        pgrep -a -f -- "$DIR/" | grep -E ' (\S*/)?(munged|slurmctld|slurmd) ' || true
        pgrep -a -x slurmstepd || true
    } | while read -r pid rest; do
        gone "$pid" || echo "$pid $rest"
    done
}

no_leftovers() { [[ -z $(leftovers) ]]; }

stop() {
    local i left
    if ! running_pid munged >/dev/null && ! running_pid slurmctld >/dev/null &&
        ! running_pid slurmd >/dev/null && [[ -z $(leftovers) ]]; then
        say "not running"
    else
        cancel_jobs
        for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_daemon "${DAEMONS[i]}"; done
    fi
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]]; then
        rm -f "$SYSTEM_CONF"
    fi
    wait_for "this cluster's processes to be gone" no_leftovers || true
    left=$(leftovers)
    [[ -z $left ]] || die "still running (stop them by process id): $(paste -sd ';' <<<"$left")"
}

# ------------------------------------------------------------------------ status
status() {
    local daemon pid rc=0
    for daemon in "${DAEMONS[@]}"; do
        if pid=$(running_pid "$daemon"); then
            say "$daemon running (pid $pid)"
        else
            say "$daemon not running"
            rc=3
        fi
    done
    if running_pid slurmctld >/dev/null; then
        client sinfo || rc=3
        client squeue || rc=3
    fi
    return "$rc"
}

case ${1:-} in
    start | stop | status)
        (($# == 1)) || die "$1 takes no arguments (see $PROG --help)"
        "$1"
        ;;
    -h | --help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
