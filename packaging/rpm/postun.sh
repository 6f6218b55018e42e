# %postun of the s3gate RPM ($1: 0 on erase, 1 on upgrade): what
# %systemd_postun_with_restart does. An upgrade restarts a running service on
# the new binary. The configuration (%config(noreplace): an edited file is
# kept as .rpmsave on erase), the logs and the user stay.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -ge 1 ]; then
	systemctl try-restart s3gate.service >/dev/null 2>&1 || :
fi
exit 0
