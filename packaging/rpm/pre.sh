# %pre of the s3gate RPM ($1: 1 on install, 2 on upgrade): the system user,
# before the files land.
getent group s3gate >/dev/null || groupadd -r s3gate
getent passwd s3gate >/dev/null || \
	useradd -r -g s3gate -d / -s /sbin/nologin -c "s3gate S3 proxy" s3gate
exit 0
