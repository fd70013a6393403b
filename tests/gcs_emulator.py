"""A GCS API served on 127.0.0.1 for the tests (the gcp-storage-emulator package, in memory), and the
environment that points every client t2ijax uses at it and away from any other address."""
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_env(url: str) -> dict[str, str]:
    """gcsfs and google-auth at the emulator, anonymous; tensorstore at the emulator with a fixed token; any
    metadata-server lookup (credentials, project) sent to a closed local port instead of 169.254.169.254."""
    return {"STORAGE_EMULATOR_HOST": url, "FSSPEC_GCS_TOKEN": "anon", "FSSPEC_GCS_PROJECT": "t2ijax-test",
            "TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",
            "GOOGLE_CLOUD_PROJECT": "t2ijax-test", "GCE_METADATA_HOST": "127.0.0.1:9",
            "GCE_METADATA_IP": "127.0.0.1:9", "NO_GCE_CHECK": "true"}


@contextlib.contextmanager
def serve():
    """Runs the emulator until the block ends; yields its URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, __file__, "start", "--host=127.0.0.1", f"--port={port}",
                               "--in-memory"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b?project=t2ijax-test", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("the GCS emulator did not start (pip install gcp-storage-emulator)") from None
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def create_bucket(url: str, name: str) -> str:
    """Creates bucket `name` on the emulator at `url`; returns gs://name."""
    request = urllib.request.Request(f"{url}/storage/v1/b?project=t2ijax-test", data=f'{{"name": "{name}"}}'.encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    return f"gs://{name}"


def _add_generation_headers() -> None:
    """Sends the x-goog-generation header GCS sends on every download: without it tensorstore reads
    generation 0 back and its next conditional write of an OCDBT manifest fails now and then with
    "Malformed StorageGeneration" (3 checkpoint saves in 60 failed so; 0 in 72 with the header)."""
    from gcp_storage_emulator.handlers import objects

    download = objects.download

    def download_with_generation(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        if response.status in (200, 206):
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj["metageneration"])

    objects.download = download_with_generation


def split_multipart_upload(body: bytes, content_type: str) -> dict:
    """The metadata and the exact bytes of a multipart/related upload. The emulator parses it as an email,
    which drops a trailing carriage return from the file: an object whose last byte is 0x0d came back one
    byte short (gcsfs frames parts with bare line feeds), and tensorstore then failed to read the OCDBT
    file it belonged to with OUT_OF_RANGE."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type).group(1).encode()
    newline = b"\r\n" if body.startswith(b"--" + boundary + b"\r\n") else b"\n"
    parts = body.split(newline + b"--" + boundary)
    meta, content = (part.split(newline * 2, 1) for part in (parts[0], parts[1]))
    file_type = re.search(rb"content-type:\s*([^\r\n;]+)", content[0], re.IGNORECASE)
    return {"meta": json.loads(meta[1]), "content": content[1],
            "content-type": file_type.group(1).decode() if file_type else "application/octet-stream"}


def _read_multipart_uploads_exactly() -> None:
    from gcp_storage_emulator import server

    read_data = server._read_data

    def read_data_exactly(request_handler, query):
        content_type = request_handler.headers.get("Content-Type") or ""
        if not content_type.startswith("multipart/related"):
            return read_data(request_handler, query)
        body = server._decode_raw_data(server._read_raw_data(request_handler), request_handler)
        return split_multipart_upload(body, content_type)

    server._read_data = read_data_exactly


def _run_patched() -> None:
    _add_generation_headers()
    _read_multipart_uploads_exactly()
    from gcp_storage_emulator.__main__ import main  # after the patches: its server binds the routes on import

    main(sys.argv[1:])


if __name__ == "__main__":
    _run_patched()
