"""STAND-IN, not amorphicutils: the seed's StateStore/StateData
(seeds/bookmarking-in-amorphic.txt) re-implemented on boto3 from the seed's
documentation alone, so the benchmark can compare bookmarkfs with what a job
does today. Same API, same object layout; not the original code."""
import json
import re
import time


class StateData:
    def __init__(self):
        self.data = {}

    def add_element(self, key, value):
        self.data[key] = value

    def remove_element(self, key):
        self.data.pop(key, None)

    def reset(self):
        self.data = {}

    def from_bytes(self, data):
        self.data = dict(data)

    def to_bytes(self):
        return json.dumps(self.data).encode()


class StateStore:
    def __init__(self, lz_bucket_name, dlz_bucket_name, state_domain, state_dataset_name,
                 username, file_type="others", client=None):
        if client is None:
            import boto3
            client = boto3.client("s3")
        self.s3 = client
        self.lz, self.dlz = lz_bucket_name, dlz_bucket_name
        self.prefix = f"{state_domain}/{state_dataset_name}/"
        self.username, self.file_type = username, file_type

    def _newest(self, job_name):
        """(upload_date, LastModified, bucket, key) of the newest _completed.json."""
        best = None
        for bucket in dict.fromkeys((self.dlz, self.lz)):
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=self.prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    m = re.search(r"/upload_date=(\d+)/", key)
                    if not m or key.rsplit("/", 1)[-1] != f"{job_name}_completed.json":
                        continue
                    cand = (int(m.group(1)), obj["LastModified"], bucket, key)
                    if best is None or cand[:2] > best[:2]:
                        best = cand
        return best

    def get_or_create(self, job_name):
        self.job_name = job_name
        state = StateData()
        best = self._newest(job_name)
        if best:
            body = self.s3.get_object(Bucket=best[2], Key=best[3])["Body"].read()
            state.from_bytes(json.loads(body))
        return state

    def _save(self, data, suffix):
        key = (f"{self.prefix}upload_date={int(time.time())}/{self.username}/"
               f"{self.file_type}/{self.job_name}_{suffix}.json")
        self.s3.put_object(Bucket=self.lz, Key=key, Body=data.to_bytes())
        return key

    def update(self, data):
        return self._save(data, "running")

    def complete(self, data):
        return self._save(data, "completed")
