#!/usr/bin/env bash
# Stop the test SLURM daemons (by their pid files) and munged.
set -u
for pidfile in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid; do
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
done
pkill -x munged 2>/dev/null
exit 0
