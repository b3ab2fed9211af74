#!/usr/bin/env bash
# Starts a single-node Slurm cluster on this machine (Debian's slurm-wlm and munge), for the
# CI test tests/slurm.rs: one node "localhost" with every CPU, one partition "debug", no
# cgroups (containers rarely allow them). Run as root. Idempotent: stops a cluster it started
# before. `scripts/slurm-localhost.sh stop` stops it.
set -euo pipefail

STATE=/var/lib/fslens-slurm
if [[ "${1:-start}" == stop ]]; then
    for d in slurmd slurmctld munged; do
        [[ -f $STATE/$d.pid ]] && kill "$(cat $STATE/$d.pid)" 2>/dev/null || true
    done
    exit 0
fi

if ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi
"$0" stop
mkdir -p $STATE/spool/d $STATE/spool/ctld /run/munge /var/log/munge
chown munge:munge /run/munge /var/log/munge
[[ -s /etc/munge/munge.key ]] || /usr/sbin/mungekey --create --force
chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
# munged refuses to start as root; Debian runs it as the munge user.
runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
cp /run/munge/munged.pid $STATE/munged.pid

CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
mkdir -p /etc/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=fslens
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
NodeName=localhost CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
# No cgroup.conf: with proctrack/linuxproc and task/none slurmd loads the cgroup plugin but
# never uses it (Slurm 22.05 has no "CgroupPlugin=disabled").

/usr/sbin/slurmctld
/usr/sbin/slurmd
for _ in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "slurm-localhost: the node did not become idle; logs:" >&2
tail -n 30 $STATE/slurmctld.log $STATE/slurmd.log >&2 || true
sinfo >&2 || true
exit 1
