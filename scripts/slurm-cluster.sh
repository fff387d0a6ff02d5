#!/usr/bin/env bash
# A real one-node SLURM cluster on localhost (slurmctld + slurmd + slurmdbd with MariaDB accounting),
# for flowspec's tests and for users who want to try the slurm executor on one machine.
#
#   scripts/slurm-cluster.sh start    # installs the Debian packages if needed, starts the daemons (idempotent)
#   scripts/slurm-cluster.sh stop     # stops them by PID
#   scripts/slurm-cluster.sh status   # prints whether the controller answers
#   scripts/slurm-cluster.sh env      # prints `export SLURM_CONF=...` for clients
#
# Needs root (apt, daemons). Facts and pitfalls behind every setting: ../shared/reference/slurm-local.md
# (submitit needs sacct, so accounting is on; kill_invalid_depend so dependants of a failed job are
# cancelled; EnforcePartLimits so impossible requests are refused at submission; a short cred_expire so a
# requeued job restarts within seconds; 8 advertised CPUs and 8 fake GPUs on a small machine).
set -euo pipefail

ROOT="${FLOWSPEC_SLURM_ROOT:-${TMPDIR:-/tmp}/flowspec-slurm}"
CONF="$ROOT/etc/slurm.conf"
NODE="$(hostname -s)"
DB_PASS="flowspec"

log() { echo "[slurm-cluster] $*" >&2; }

install_packages() {
  local missing=()
  for bin in slurmctld slurmd sbatch munged slurmdbd mariadbd; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("$bin")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing slurm, munge and mariadb (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge slurmdbd \
    slurm-wlm-mysql-plugin mariadb-server >/dev/null
}

write_config() {
  mkdir -p "$ROOT"/{etc,state,slurmd,log,fakegpu}
  local mem; mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 2048 ))
  for i in 0 1 2 3 4 5 6 7; do
    [ -e "$ROOT/fakegpu/nvidia$i" ] || mknod "$ROOT/fakegpu/nvidia$i" c 195 "$i"
  done
  cat > "$CONF" <<CONFIG
ClusterName=flowspec
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=5
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
DependencyParameters=kill_invalid_depend
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
EnforcePartLimits=ALL
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/slurmd
SlurmctldPidFile=$ROOT/slurmctld.pid
SlurmdPidFile=$ROOT/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
NodeName=$NODE CPUs=8 RealMemory=$mem Gres=gpu:8 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONFIG
  echo "AutoDetect=off" > "$ROOT/etc/gres.conf"
  echo "NodeName=$NODE Name=gpu File=$ROOT/fakegpu/nvidia[0-7]" >> "$ROOT/etc/gres.conf"
  cat > "$ROOT/etc/slurmdbd.conf" <<DBD
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$ROOT/log/slurmdbd.log
PidFile=$ROOT/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
DBD
  chmod 600 "$ROOT/etc/slurmdbd.conf"
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS COMMAND...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.2
  done
}

node_idle() { [ "$(sinfo -h -o %T 2>/dev/null | head -n1)" = "idle" ]; }

start() {
  export SLURM_CONF="$CONF"
  if [ -f "$CONF" ] && scontrol ping 2>/dev/null | grep -q "UP" && node_idle; then
    log "already running ($CONF)"; return 0
  fi
  install_packages
  stop_daemons quiet
  rm -rf "$ROOT/state"  # a fresh controller state: old jobs are not recovered, the node is not left drained
  write_config
  install -d -o munge -g munge -m 0755 /run/munge
  [ -f /etc/munge/munge.key ] || mungekey -c
  running /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  if ! mariadb -e "select 1" >/dev/null 2>&1; then
    nohup /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 > "$ROOT/log/mariadb.log" 2>&1 &
    echo $! > "$ROOT/mariadbd.pid"
    wait_for 30 mariadb -e "select 1"
  fi
  # The controller state was wiped, so job ids start again at 1: drop the old accounting records too,
  # or sacct would answer for a new job with the old job of the same id.
  mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  SLURM_CONF="$CONF" slurmdbd
  wait_for 20 sacctmgr -n list cluster
  sacctmgr -i add cluster flowspec >/dev/null 2>&1 || true
  slurmctld
  slurmd
  wait_for 30 node_idle || { log "node did not become idle"; sinfo >&2 || true; return 1; }
  log "up: SLURM_CONF=$CONF"
}

stop_daemons() {
  for pid in "$ROOT/slurmd.pid" "$ROOT/slurmctld.pid" "$ROOT/slurmdbd.pid" "$ROOT/mariadbd.pid"; do
    if running "$pid"; then
      local n; n=$(cat "$pid")  # read before the kill: a daemon removes its own pid file as it exits
      kill "$n"; wait_for 15 bash -c "! kill -0 $n 2>/dev/null" || true
    fi
    rm -f "$pid"
  done
  [ "${1:-}" = quiet ] || log "stopped"
}

case "${1:-start}" in
  start) start ;;
  stop) stop_daemons ;;
  status) SLURM_CONF="$CONF" scontrol ping ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
