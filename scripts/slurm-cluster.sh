#!/usr/bin/env bash
# A real SLURM cluster on one machine (slurmctld + slurmd + slurmdbd with MariaDB accounting), for
# flowspec's tests and for users who want to try the slurm executor on one machine.
#
#   scripts/slurm-cluster.sh start [--nodes N]  # installs the Debian packages if needed, starts the daemons
#                                               # (idempotent); N > 1: N compute nodes, see below
#   scripts/slurm-cluster.sh stop     # stops the daemons by PID and removes what start created
#   scripts/slurm-cluster.sh status   # prints whether the controller answers
#   scripts/slurm-cluster.sh env      # prints `export SLURM_CONF=...` for clients (and the node-local folder)
#   scripts/slurm-cluster.sh node-down I   # several nodes: node I fails (its slurmd and every process in its
#   scripts/slurm-cluster.sh node-up I     #   namespace killed, by PID); node-up starts its slurmd again
#
# One node (the default) is this machine, by its hostname. With --nodes N > 1 each compute node is a slurmd
# in a network namespace of its own (flowspec-node1..N, addresses $SUBNET.11.., its own hostname), joined to
# this machine by a veth pair on a bridge ($SUBNET.1, where the controller listens): SLURM and torch see N
# hosts. The advertised CPUs, memory and fake GPUs are split between them; the filesystem is shared, as on a
# cluster, except $ROOT/node-local: a tmpfs of each node's own (a mount namespace per node), what a folder on a
# node's local disk looks like (flowspec refuses a run folder the nodes cannot see; its test puts one there).
# Only that subnet is used: a namespace has no route anywhere else.
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
NODES=1
SUBNET="10.77.0"  # the one subnet of the multi-node cluster: the bridge is .1, node i is .(10 + i)
BRIDGE="flowspec-br"
NODE_LOCAL="$ROOT/node-local"  # several nodes: each node mounts a tmpfs of its own here
CREATED="$ROOT/created"  # what start made besides daemons (namespaces, links, the bridge), for stop
HOSTS_MARK="# flowspec-slurm"

log() { echo "[slurm-cluster] $*" >&2; }
fail() { log "$*"; exit 3; }
node_name() { echo "flowspec-node$1"; }
node_addr() { echo "$SUBNET.$(( 10 + $1 ))"; }

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
  # One node: this machine. Several: 8 CPUs, the memory and 8 fake GPUs split between namespaced nodes.
  local ctl="$NODE" pidfile="$ROOT/slurmd.pid" spool="$ROOT/slurmd" logfile="$ROOT/log/slurmd.log"
  local nodes="NodeName=$NODE CPUs=8 RealMemory=$mem Gres=gpu:8 State=UNKNOWN"
  local gres="NodeName=$NODE Name=gpu File=$ROOT/fakegpu/nvidia[0-7]" slurmd_timeout=300
  if [ "$NODES" -gt 1 ]; then
    local cpus=$(( 8 / NODES )) gpus=$(( 8 / NODES )) i
    ctl="$NODE($SUBNET.1)" pidfile="$ROOT/slurmd-%n.pid" spool="$ROOT/slurmd/%n" logfile="$ROOT/log/slurmd-%n.log"
    slurmd_timeout=10  # a node that stops answering is DOWN within seconds (node-down; the fault tests)
    nodes="" gres=""
    for i in $(seq 1 "$NODES"); do
      nodes+="NodeName=$(node_name "$i") NodeAddr=$(node_addr "$i") CPUs=$cpus RealMemory=$(( mem / NODES )) Gres=gpu:$gpus State=UNKNOWN"$'\n'
      gres+="NodeName=$(node_name "$i") Name=gpu File=$ROOT/fakegpu/nvidia[$(( (i - 1) * gpus ))-$(( i * gpus - 1 ))]"$'\n'
    done
    nodes="${nodes%$'\n'}" gres="${gres%$'\n'}"
  fi
  cat > "$CONF" <<CONFIG
ClusterName=flowspec
SlurmctldHost=$ctl
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
SlurmdTimeout=$slurmd_timeout
GresTypes=gpu
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$spool
SlurmctldPidFile=$ROOT/slurmctld.pid
SlurmdPidFile=$pidfile
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$logfile
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
$nodes
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONFIG
  echo "AutoDetect=off" > "$ROOT/etc/gres.conf"
  echo "$gres" >> "$ROOT/etc/gres.conf"
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

# Every node of this cluster is idle, and there are as many as asked for.
nodes_idle() { [ "$(sinfo -h -N -o %T 2>/dev/null | sort -u)" = "idle" ] && [ "$(sinfo -h -N 2>/dev/null | wc -l)" = "$NODES" ]; }

make_network() {  # the bridge, then per node a namespace joined to it by a veth pair; each noted in $CREATED
  : > "$CREATED"
  ip netns add flowspec-probe 2>/dev/null && ip netns del flowspec-probe \
    || fail "cannot create network namespaces (\`ip netns add\` needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN)"
  ip link add "$BRIDGE" type bridge || fail "cannot create the bridge $BRIDGE (needs CAP_NET_ADMIN)"
  echo "link $BRIDGE" >> "$CREATED"
  ip addr add "$SUBNET.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  local i ns
  for i in $(seq 1 "$NODES"); do
    ns=$(node_name "$i")
    ip netns add "$ns" && echo "netns $ns" >> "$CREATED"
    ip link add "flowspec-v$i" type veth peer name eth0 netns "$ns" && echo "link flowspec-v$i" >> "$CREATED"
    ip link set "flowspec-v$i" master "$BRIDGE" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$(node_addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
  # No DNS here: the node names go to /etc/hosts (rewritten in place: it may be a bind mount).
  { grep -v "$HOSTS_MARK" /etc/hosts; for i in $(seq 1 "$NODES"); do
      echo "$(node_addr "$i") $(node_name "$i") $HOSTS_MARK"; done; } > "$ROOT/hosts"
  cat "$ROOT/hosts" > /etc/hosts
}

start_slurmd() {
  if [ "$NODES" -eq 1 ]; then slurmd; return; fi
  local i
  for i in $(seq 1 "$NODES"); do node_up "$i"; done
}

node_up() {  # node I's slurmd in its network namespace, under its own hostname (a UTS namespace of its own);
  # nsenter, not `ip netns exec`, which mounts a fresh /sys without the cgroup hierarchy slurmd needs
  local ns; ns=$(node_name "$1")
  [ -e "/run/netns/$ns" ] || fail "no node $ns (start --nodes N first)"
  mkdir -p "$ROOT/slurmd/$ns" "$NODE_LOCAL"
  # a mount namespace of its own (host mounts still propagate in) for the node-local tmpfs; it goes with the
  # node's last process
  nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation slave \
    sh -c "hostname $ns && mount -t tmpfs -o size=16m flowspec-node-local $NODE_LOCAL && exec slurmd -N $ns"
}

node_down() {  # node I fails: its slurmd and every process in its namespace (job steps, tasks) killed at once
  local ns pid; ns=$(node_name "$1")
  [ -e "/run/netns/$ns" ] || fail "no node $ns (start --nodes N first)"
  for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null || true; done
  rm -f "$ROOT/slurmd-$ns.pid"
  log "node $ns is down"
}

remove_network() {  # what make_network noted, in reverse; processes left in a namespace (job steps) by PID
  [ -f "$CREATED" ] || return 0
  local kind name pid
  tac "$CREATED" | while read -r kind name; do
    if [ "$kind" = netns ]; then
      for pid in $(ip netns pids "$name" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$name" 2>/dev/null || true
    else
      ip link del "$name" 2>/dev/null || true
    fi
  done
  rm -f "$CREATED"
  if grep -q "$HOSTS_MARK" /etc/hosts; then
    grep -v "$HOSTS_MARK" /etc/hosts > "$ROOT/hosts" || true
    cat "$ROOT/hosts" > /etc/hosts
  fi
}

start() {
  export SLURM_CONF="$CONF"
  if [ -f "$CONF" ] && scontrol ping 2>/dev/null | grep -q "UP" && nodes_idle; then
    log "already running ($CONF, $NODES node(s))"; return 0
  fi
  install_packages
  stop_daemons quiet
  rm -rf "$ROOT/state"  # a fresh controller state: old jobs are not recovered, the node is not left drained
  [ "$NODES" -eq 1 ] || make_network
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
  start_slurmd
  wait_for 30 nodes_idle || { log "nodes did not become idle"; sinfo -N >&2 || true; return 1; }
  log "up: SLURM_CONF=$CONF ($NODES node(s))"
}

stop_daemons() {
  for pid in "$ROOT"/slurmd*.pid "$ROOT/slurmctld.pid" "$ROOT/slurmdbd.pid" "$ROOT/mariadbd.pid"; do
    if running "$pid"; then
      local n; n=$(cat "$pid")  # read before the kill: a daemon removes its own pid file as it exits
      kill "$n"; wait_for 15 bash -c "! kill -0 $n 2>/dev/null" || true
    fi
    rm -f "$pid"
  done
  remove_network
  [ "${1:-}" = quiet ] || log "stopped"
}

command="${1:-start}"
shift || true
case "$command" in node-down|node-up) NODE_INDEX="${1:?$command needs a node number}"; shift ;; esac
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES="${2:?--nodes needs a number}"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[[ "$NODES" =~ ^[1-8]$ ]] || { echo "--nodes must be 1 to 8, got $NODES" >&2; exit 2; }

case "$command" in
  start) start ;;
  stop) stop_daemons ;;
  status) SLURM_CONF="$CONF" scontrol ping ;;
  env) echo "export SLURM_CONF=$CONF"; echo "export FLOWSPEC_SLURM_NODE_LOCAL=$NODE_LOCAL" ;;
  node-down) export SLURM_CONF="$CONF"; node_down "${NODE_INDEX:?}" ;;
  node-up) export SLURM_CONF="$CONF"; node_up "${NODE_INDEX:?}" ;;
  *) echo "usage: $0 start [--nodes N]|stop|status|env" >&2; exit 2 ;;
esac
