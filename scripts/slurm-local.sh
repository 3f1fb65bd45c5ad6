#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests/slurm.rs (the recipe checked in
# ../shared/reference/slurm-local.md): Debian's slurm-wlm and munge, every CPU of the machine
# one node, partition `debug`. Runs as root.
#
#   scripts/slurm-local.sh start    # installs what is missing, starts munged, slurmctld, slurmd
#   scripts/slurm-local.sh stop     # stops the daemons it started
set -euo pipefail

case "${1:-start}" in
start)
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge) >/dev/null
    fi
    host=$(hostname -s)
    cpus=$(nproc)
    mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /etc/slurm /run/munge
    cat >/etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmUser=root
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    pgrep -x munged >/dev/null || /usr/sbin/munged --force 2>/dev/null || true
    pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
    pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
    for _ in $(seq 30); do
        if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            echo "slurm-local: node $host up ($cpus CPUs)"
            exit 0
        fi
        sleep 1
    done
    echo "slurm-local: the node did not come up; see /var/log/slurm/" >&2
    sinfo >&2 || true
    exit 1
    ;;
stop)
    for d in slurmd slurmctld munged; do
        pkill -x "$d" 2>/dev/null || true
    done
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
