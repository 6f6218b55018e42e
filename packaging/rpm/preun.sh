# %preun of the s3gate RPM ($1: 0 on erase, 1 on upgrade): what
# %systemd_preun does. On erase, disable and stop the service.
if [ "$1" -eq 0 ]; then
	systemctl --no-reload disable --now s3gate.service >/dev/null 2>&1 || :
fi
exit 0
