#!/usr/bin/env bash
# Bring up a real single-node SLURM on localhost for the integration tests (Debian's slurmctld, slurmd, munge).
# Partitions: cpu (default) and gpu (two fake GPUs, gres.conf File=/dev/null and /dev/zero, so GPU jobs schedule, two at once).
# slurm.conf must live in /etc/slurm (the job step plugin drops SLURM_CONF inside jobs). Needs root.
# Usage: start.sh [--accounting | --no-accounting]
#   --accounting     also a local MariaDB and slurmdbd (accounting_storage/slurmdbd: `sacct` tracks jobs, as on a
#                    production cluster), with the cluster, the account metantk-lab and the user root registered
#                    through sacctmgr; the slurmctld already running is restarted into that configuration
#   --no-accounting  (default) accounting_storage/none: `sacct` exits 1; a slurmctld running with accounting is
#                    restarted without it (slurmdbd and MariaDB keep running, unused)
set -euo pipefail
mode=${1:---no-accounting}
case "$mode" in --accounting|--no-accounting) ;; *) echo "usage: $0 [--accounting|--no-accounting]" >&2; exit 2;; esac
host=$(hostname)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm /run/munge
if [ "$mode" = --accounting ]; then
  storage=accounting_storage/slurmdbd
  accounting_lines="AccountingStorageType=${storage}
AccountingStorageHost=localhost
AccountingStorageEnforce=associations"   # as production sites do: a job's account must be registered
else
  storage=accounting_storage/none
  accounting_lines="AccountingStorageType=${storage}"
fi
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=metantk-test
SlurmctldHost=${host}
AuthType=auth/munge
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
${accounting_lines}
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
GresTypes=gpu
ReturnToService=2
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
NodeName=${host} CPUs=${cpus} RealMemory=${mem} Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=${host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=${host} MaxTime=INFINITE State=UP
CONF
printf 'AutoDetect=off\nName=gpu File=/dev/null\nName=gpu File=/dev/zero\n' > /etc/slurm/gres.conf
: > /var/log/slurm/jobcomp.log
# munge: key, runtime dir owned by munge, daemon as the munge user
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown munge:munge /etc/munge/munge.key /run/munge && chmod 400 /etc/munge/munge.key && chmod 755 /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

start_slurmdbd() {   # MariaDB (its Debian datadir, root by unix socket), the accounting database, slurmdbd
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if ! pgrep -x mariadbd >/dev/null && ! pgrep -x mysqld >/dev/null; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    runuser -u mysql -- /usr/sbin/mariadbd --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
      --bind-address=127.0.0.1 >>/var/log/slurm/mariadb.log 2>&1 &
    for _ in $(seq 1 60); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'metantk-test';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > /etc/slurm/slurmdbd.conf <<DBD
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=metantk-test
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
DBD
  chmod 600 /etc/slurm/slurmdbd.conf
  pgrep -x slurmdbd >/dev/null || slurmdbd
  for _ in $(seq 1 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
  sacctmgr -i add cluster metantk-test >/dev/null 2>&1 || true
  sacctmgr -i add account metantk-lab Cluster=metantk-test Description=tests Organization=tests >/dev/null 2>&1 || true
  sacctmgr -i add user root Account=metantk-lab >/dev/null 2>&1 || true
  sacctmgr -n -P list assoc user=root format=account | grep -qx metantk-lab
}

if [ "$mode" = --accounting ]; then start_slurmdbd; fi
# a controller started from another slurm.conf (the other accounting mode) is restarted: the file's hash is kept
conf_sum=$(md5sum /etc/slurm/slurm.conf | cut -d' ' -f1)
if pgrep -x slurmctld >/dev/null && [ "$(cat /run/slurm/slurm.conf.md5 2>/dev/null)" != "$conf_sum" ]; then
  kill "$(cat /run/slurm/slurmctld.pid)"; for _ in $(seq 1 40); do pgrep -x slurmctld >/dev/null || break; sleep 0.25; done
fi
pgrep -x slurmctld >/dev/null || { slurmctld -i; echo "$conf_sum" > /run/slurm/slurm.conf.md5; }
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 60); do
  if sinfo -h -o '%T' 2>/dev/null | grep -q idle; then
    scontrol update nodename="${host}" state=resume >/dev/null 2>&1 || true
    echo "slurm up: $(sinfo -h -o '%P %T %G' | tr '\n' ' ')"
    exit 0
  fi
  sleep 1
done
echo "slurm did not become idle:" >&2; sinfo >&2 || true; tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
