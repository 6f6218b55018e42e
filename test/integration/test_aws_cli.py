"""Real S3 clients through s3gate: boto3 and the aws CLI against moto's S3 over
TLS (the test CA), with our DNS server mapping every name to 127.0.0.1."""

import hashlib
import os
import shutil
import subprocess
import unittest

import harness as h

MISSING = h.moto_available()


@unittest.skipIf(MISSING is not None, MISSING or "")
class AwsClientTest(h.MotoMixin, h.ProxyTestCase):
    def client(self):
        import boto3
        from botocore.config import Config
        return boto3.client(
            "s3", region_name=h.REGION, endpoint_url=self.endpoint,
            aws_access_key_id="testing", aws_secret_access_key="testing",
            verify=self.pki.ca_file,
            config=Config(proxies={"https": f"http://127.0.0.1:{self.proxy.port}"},
                          s3={"addressing_style": "virtual"}, retries={"max_attempts": 1},
                          connect_timeout=10, read_timeout=30))

    def aws(self, *args, timeout=60):
        return self.run_aws(args, timeout=timeout)

    def create_media(self, s3):
        import botocore.exceptions
        try:
            s3.create_bucket(Bucket="media",
                             CreateBucketConfiguration={"LocationConstraint": h.REGION})
        except botocore.exceptions.ClientError as exc:  # moto keeps buckets across tests
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def test_boto3_then_aws_cli_list(self):
        self.start_proxy()
        s3 = self.client()
        self.create_media(s3)
        s3.put_object(Bucket="media", Key="shot/010.exr", Body=b"frame 10")
        self.assertEqual(s3.get_object(Bucket="media", Key="shot/010.exr")["Body"].read(), b"frame 10")
        rec = self.proxy.wait_for_log(lambda r: r.get("host") == h.s3_name("media"))
        self.assert_log(rec, kind="connect", method="CONNECT", port=self.moto.port, bucket="media",
                        rule="media", decision="allow", reason=None, status=200,
                        upstream=f"127.0.0.1:{self.moto.port}")

        if shutil.which("aws") is None:
            self.skipTest("aws CLI not on PATH (boto3 part passed)")
        r = self.aws("s3", "ls", "s3://media/shot/")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("010.exr", r.stdout)
        self.assert_settled()

    @unittest.skipIf(shutil.which("aws") is None, "aws CLI not on PATH")
    def test_aws_cli_copy_round_trip(self):
        # Larger than the CLI's 8 MiB multipart threshold: several parallel tunnels.
        self.start_proxy()
        self.create_media(self.client())
        path = os.path.join(self.workdir, "big.bin")
        size = 9 << 20
        with open(path, "wb") as f:
            for chunk in h.pattern_chunks(size):
                f.write(chunk)
        up = self.aws("s3", "cp", path, "s3://media/big.bin")
        self.assertEqual(up.returncode, 0, up.stdout + up.stderr)
        back = os.path.join(self.workdir, "back.bin")
        down = self.aws("s3", "cp", "s3://media/big.bin", back)
        self.assertEqual(down.returncode, 0, down.stdout + down.stderr)
        with open(back, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), h.pattern_sha256(size))
        h.wait_until(lambda: sum(r.get("bytes_up", 0) for r in self.proxy.access_lines()) > size, 10,
                     message="the upload's bytes in the access log")
        self.assert_settled()

    def test_bucket_not_in_allow_list(self):
        import botocore.exceptions
        self.start_proxy()
        s3 = self.client()
        with self.assertRaises(botocore.exceptions.BotoCoreError) as ctx:
            s3.create_bucket(Bucket="forbidden",
                             CreateBucketConfiguration={"LocationConstraint": h.REGION})
        # urllib3 reports the proxy's 403 to CONNECT as a proxy connection failure.
        self.assertIsInstance(ctx.exception, botocore.exceptions.ProxyConnectionError)
        rec = self.proxy.wait_for_log(lambda r: r.get("host") == h.s3_name("forbidden"))
        self.assert_log(rec, decision="deny", reason="bucket_not_allowed", status=403, bucket="forbidden")

        if shutil.which("aws") is None:
            self.skipTest("aws CLI not on PATH (boto3 part passed)")
        r = self.aws("s3", "ls", "s3://forbidden")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        n = len([x for x in self.proxy.access_lines() if x.get("reason") == "bucket_not_allowed"])
        self.assertGreaterEqual(n, 2)
        self.assert_settled()


if __name__ == "__main__":
    unittest.main()
