#!/usr/bin/env bash
# Stop the test SLURM daemons (by their pid files), slurmdbd and MariaDB if start.sh --accounting started them, and
# munged.
set -u
for pidfile in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid /run/slurm/slurmdbd.pid; do
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
done
pkill -x mariadbd 2>/dev/null
pkill -x munged 2>/dev/null
exit 0
