# %post of the s3gate RPM: what %systemd_post does. On a first install the
# distribution's preset decides whether the unit is enabled; it is never
# started here (the configuration is an example until the operator edits it).
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
	systemctl --no-reload preset s3gate.service >/dev/null 2>&1 || :
fi
exit 0
