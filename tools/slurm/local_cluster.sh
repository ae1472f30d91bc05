#!/usr/bin/env bash
# A two-node SLURM cluster on this machine, to try tools/slurm/train.sbatch before a real one
# (and for tests/test_slurm.py). Root only.
#
#     sudo tools/slurm/local_cluster.sh start     # prints the line to export SLURM_CONF
#     export SLURM_CONF=/tmp/alexnet_mp-slurm/slurm.conf
#     sbatch --nodes=2 tools/slurm/train.sbatch --data-path STORE --output-dir runs/try
#     sudo tools/slurm/local_cluster.sh stop      # stops only the daemons it started
#
# Nodes n1 and n2 (one CPU each, partition "debug") are two `slurmd -N NAME` on this host,
# each with its own port, pid file and spool dir (%n). proctrack/linuxproc and task/none
# stand in for the cgroup plugins, which fail in containers. munged is started by hand
# where it is not running (no systemd in a container). Debian's slurm-wlm and munge
# are installed with apt where missing. ALEXNET_MP_SLURM_DIR moves the state (default
# /tmp/alexnet_mp-slurm); ALEXNET_MP_SLURM_CPUS gives each node more CPUs (default 1).
set -euo pipefail

DIR=${ALEXNET_MP_SLURM_DIR:-/tmp/alexnet_mp-slurm}
CPUS=${ALEXNET_MP_SLURM_CPUS:-1}
NODES=(n1 n2)
CTLD_PORT=16817
FIRST_SLURMD_PORT=16818

die() { echo "error: $*" >&2; exit 2; }

install_missing() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return
    command -v apt-get >/dev/null || die "${missing[*]} missing and no apt-get: install them by hand"
    echo "installing ${missing[*]} with apt-get (a minute or two)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$DIR/apt.log" 2>&1 \
        || die "apt-get install ${missing[*]} failed (no package registry reachable?): see $DIR/apt.log"
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return                                   # a munged already answers: not ours to start or stop
    fi
    [ -f /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || /usr/sbin/create-munge-key -f; }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge/munge.key
    chmod 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$DIR/munged.pid"      # stop kills it only if this script started it
}

write_conf() {
    local host port
    host=$(hostname -s)
    cat >"$DIR/slurm.conf" <<EOF
ClusterName=alexnetmp
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmdSpoolDir=$DIR/spool/%n
SlurmdLogFile=$DIR/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
InactiveLimit=0
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
EOF
    port=$FIRST_SLURMD_PORT
    for node in "${NODES[@]}"; do
        echo "NodeName=$node NodeHostname=$host NodeAddr=127.0.0.1 Port=$port CPUs=$CPUS State=UNKNOWN" >>"$DIR/slurm.conf"
        port=$((port + 1))
    done
    echo "PartitionName=debug Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP" >>"$DIR/slurm.conf"
}

start() {
    [ "$(id -u)" -eq 0 ] || die "local_cluster.sh runs the SLURM daemons as root: run it with sudo"
    mkdir -p "$DIR/state"
    [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null \
        && { echo "already running; export SLURM_CONF=$DIR/slurm.conf"; return; }
    install_missing
    start_munge
    write_conf
    export SLURM_CONF=$DIR/slurm.conf
    slurmctld -f "$SLURM_CONF" -i       # -i: forget the jobs of an earlier cluster in $DIR
    for node in "${NODES[@]}"; do
        mkdir -p "$DIR/spool/$node"
        slurmd -f "$SLURM_CONF" -N "$node"
    done
    for _ in $(seq 60); do                # the nodes register within seconds
        if [ "$(sinfo -h -o '%t' -p debug 2>/dev/null | sort -u)" = "idle" ]; then
            echo "cluster up: nodes ${NODES[*]}, partition debug; export SLURM_CONF=$DIR/slurm.conf"
            return
        fi
        sleep 1
    done
    die "the nodes did not come up in 60 s: see $DIR/slurmctld.log and $DIR/slurmd-*.log"
}

stop_pidfile() {
    local file=$1
    [ -f "$file" ] || return 0
    local pid
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$file"
}

stop() {
    export SLURM_CONF=$DIR/slurm.conf
    [ -f "$SLURM_CONF" ] && scancel --full --quiet -p debug 2>/dev/null || true
    for node in "${NODES[@]}"; do stop_pidfile "$DIR/slurmd-$node.pid"; done
    stop_pidfile "$DIR/slurmctld.pid"
    stop_pidfile "$DIR/munged.pid"
    echo "stopped the daemons started from $DIR"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 start|stop" ;;
esac
