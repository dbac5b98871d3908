#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for CI and local tests of launcher=slurm.
# Adapted from ../shared/reference/slurm-local-cluster.sh (Debian 12, slurm-wlm 22.05, munge,
# MariaDB); runs as root without systemd or cgroups.
#
#   bash slurm/cluster.sh start    install (first time), configure and start; idempotent: about
#                                  1 s when the cluster already runs with the same config
#   bash slurm/cluster.sh stop     stop every daemon it started
#   bash slurm/cluster.sh status   sinfo + squeue; exit 1 when the cluster does not answer
#
# Settings the harness relies on (see conf/launcher/slurm.yaml):
#   accounting (slurmdbd + MariaDB): sacct sees jobs that die without a result (scancel,
#     TIMEOUT, node failure), so the driver never waits on them forever
#   EnforcePartLimits=ALL: an impossible request (too many CPUs/GPUs, unknown partition) is
#     refused by sbatch at submit instead of staying PENDING forever
#   AuthInfo=cred_expire=5 + sched_interval=2,bf_interval=2: a requeued job (scontrol requeue,
#     preemption, time-limit checkpoint) starts again after ~6 s instead of ~120 s
#   KillWait=10: a job gets 10 s between SIGTERM and SIGKILL (time to save a checkpoint)
#
# Environment:
#   SLURM_LOCAL_DIR   state/spool/log/pid folder (default /var/tmp/slurm-local)
#   SLURM_ACCOUNTING  1 (default) slurmdbd + MariaDB; 0 minimal (no sacct: not for the harness)
set -Eeuo pipefail   # -E: the ERR trap below also fires inside functions
D=${SLURM_LOCAL_DIR:-/var/tmp/slurm-local}
ACCT=${SLURM_ACCOUNTING:-1}
H=$(hostname -s)                      # NodeName and SlurmctldHost must equal `hostname -s`
CONF=/etc/slurm/slurm.conf

fail() { echo "slurm/cluster.sh: $*" >&2; exit 1; }
wait_for() {  # wait_for SECONDS CMD...: poll CMD every 0.2 s until it succeeds
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { echo "slurm/cluster.sh: timed out waiting for: $*" >&2; return 1; }
    sleep 0.2
  done
}
alive() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }  # PIDFILE NAME
trap 'echo "slurm/cluster.sh: ${ACTION:-?} failed at line $LINENO: $BASH_COMMAND" >&2' ERR
[ "$(id -u)" = 0 ] || fail "must run as root (it installs packages and starts daemons)"

install_pkgs() {
  local p pkgs="munge slurmctld slurmd slurm-client" missing="" pol=/usr/sbin/policy-rc.d
  [ "$ACCT" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  [ -z "$missing" ] && return 0
  command -v apt-get >/dev/null || fail "missing packages ($missing) and no apt-get to install them"
  echo "installing$missing (first start only)"
  # policy-rc.d exiting 101 keeps postinst scripts from starting the services (we start them)
  [ -e $pol ] || { printf '#!/bin/sh\nexit 101\n' > $pol; chmod +x $pol; trap "rm -f $pol" EXIT; }
  apt-get update -qq || fail "apt-get update failed"
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing \
    >/dev/null || fail "apt-get install$missing failed"
}

slurm_conf() {  # the wanted slurm.conf on stdout
  local node; node=$(slurmd -C | head -1)   # "NodeName=<host> CPUs=.. RealMemory=.." as detected
  cat <<EOF
# Written by slurm/cluster.sh: a single-node cluster for the harness's SLURM tests.
ClusterName=local
SlurmctldHost=$H
SlurmUser=root
AuthType=auth/munge
# cred_expire=5: a requeued job (scontrol requeue, checkpoint on signal) restarts after ~6 s
AuthInfo=cred_expire=5
# no cgroup plugins: proctrack/linuxproc + task/none work without a cgroup setup
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# start jobs within ~1 s of sbatch, and re-scan pending (e.g. requeued) jobs every 2 s
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=2
ReturnToService=2
# reject at submit a job asking more than any node has, instead of leaving it PENDING forever
EnforcePartLimits=ALL
# jobs may be requeued (scontrol requeue, preemption, checkpoint before the time limit)
JobRequeue=1
# seconds between SIGTERM and SIGKILL when a job is cancelled, requeued or hits its limit
KillWait=10
MailProg=/bin/true
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
EOF
  if [ "$ACCT" = 1 ]; then
    printf '%s\n' AccountingStorageType=accounting_storage/slurmdbd \
      AccountingStorageHost=localhost JobAcctGatherType=jobacct_gather/linux
  else
    printf '%s\n' AccountingStorageType=accounting_storage/none \
      JobAcctGatherType=jobacct_gather/none JobCompType=jobcomp/filetxt \
      "JobCompLoc=$D/log/jobcomp.txt"
  fi
  printf '%s\n' "$node State=UNKNOWN" \
    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
}

write_slurmdbd_conf() {
  cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$D/run/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
  chmod 600 /etc/slurm/slurmdbd.conf       # slurmdbd refuses a readable config
}

daemons_alive() {
  alive "$D/run/slurmctld.pid" slurmctld && alive "$D/run/slurmd.pid" slurmd &&
    { [ "$ACCT" != 1 ] || alive "$D/run/slurmdbd.pid" slurmdbd; }
}

node_ready() { sinfo -h -o %T 2>/dev/null | grep -qxE 'idle|mixed|allocated'; }

start_munge() {
  mkdir -p /run/munge && chown munge:munge /run/munge
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey -c
  alive /run/munge/munged.pid munged || runuser -u munge -- munged
  wait_for 10 munge -n || fail "munged does not answer (see /var/log/munge/munged.log)"
}

start_accounting() {
  write_slurmdbd_conf
  # mariadbd drops to user mysql: its pid file/socket must be in a mysql-writable dir
  mkdir -p /run/mysqld && chown mysql:root /run/mysqld
  alive /run/mysqld/mysqld.pid mariadbd || { setsid mariadbd --user=mysql --skip-networking \
    --pid-file=/run/mysqld/mysqld.pid </dev/null >>"$D/log/mariadb.log" 2>&1 & }
  wait_for 60 mariadb -e 'select 1' || fail "MariaDB did not start (see $D/log/mariadb.log)"
  alive "$D/run/slurmdbd.pid" slurmdbd || slurmdbd   # creates slurm_acct_db on first start
  wait_for 30 sacctmgr -n show cluster || fail "slurmdbd does not answer (see $D/log/slurmdbd.log)"
}

cancel_leftovers() {  # jobs a previous life of the cluster left queued/"running": gone now
  local ids
  ids=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  [ -z "${ids// }" ] && return 0
  echo "cancelling jobs left by the cluster's previous run: $ids"
  # shellcheck disable=SC2086
  scancel $ids || true
  wait_for 60 sh -c '[ -z "$(squeue -h -t R,CG,PD -o %A)" ]' || true
}

start() {
  local wanted cold=0
  install_pkgs
  mkdir -p "$D"/{state,spool,log,run}
  wanted=$(slurm_conf)
  # fast path: everything runs with this very config and the node takes jobs
  if daemons_alive && [ "$wanted" = "$(cat $CONF 2>/dev/null)" ] && node_ready; then
    echo "slurm already up: $(sinfo -h -o '%P %T %N %c cpus')"
    return 0
  fi
  getent hosts "$H" >/dev/null || echo "127.0.0.1 $H" >> /etc/hosts   # host must resolve
  printf '%s\n' "$wanted" > $CONF
  start_munge
  if [ "$ACCT" = 1 ]; then start_accounting; fi
  if alive "$D/run/slurmctld.pid" slurmctld; then
    scontrol reconfigure || fail "scontrol reconfigure failed (see $D/log/slurmctld.log)"
  else
    slurmctld             # daemonizes; the cluster registers itself in the accounting db
  fi
  # slurmd was down: no job of the state saved by an earlier run can still be running
  alive "$D/run/slurmd.pid" slurmd || { cold=1; slurmd; }
  wait_for 60 node_ready || fail "node not idle after 60 s: $(sinfo -h -o '%T %E' 2>&1)" \
    "(see $D/log/slurmctld.log, $D/log/slurmd.log)"
  if [ $cold = 1 ]; then cancel_leftovers; fi
  if sinfo -h -o %T | grep -qx idle; then   # a busy node would keep the test job waiting
    wait_for 30 timeout 20 srun -t 1 true || fail "a test job step (srun true) did not run"
  fi
  echo "slurm up: $(sinfo -h -o '%P %T %N %c cpus')"
}

stop_group() {  # stop_group PIDFILE:NAME...: SIGTERM them together, wait <= 30 s, then SIGKILL
  local fn pids="" p i
  for fn in "$@"; do alive "${fn%:*}" "${fn#*:}" && pids="$pids $(cat "${fn%:*}")"; done
  # shellcheck disable=SC2086
  [ -z "$pids" ] || { kill $pids 2>/dev/null || true; }
  for i in $(seq 300); do kill -0 $pids 2>/dev/null || break; sleep 0.1; done
  for p in $pids; do kill -0 "$p" 2>/dev/null && kill -9 "$p"; done
  for fn in "$@"; do rm -f "${fn%:*}"; done
}

stop() {  # slurm daemons first, then the services they use
  stop_group "$D/run/slurmd.pid:slurmd" "$D/run/slurmctld.pid:slurmctld"
  stop_group "$D/run/slurmdbd.pid:slurmdbd" /run/mysqld/mysqld.pid:mariadbd \
    /run/munge/munged.pid:munged
  echo "slurm stopped"
}

status() {
  timeout 20 sinfo || fail "the cluster does not answer (bash slurm/cluster.sh start)"
  timeout 20 squeue
}

ACTION=${1:-}
case "$ACTION" in
  start|stop|status) "$1" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
