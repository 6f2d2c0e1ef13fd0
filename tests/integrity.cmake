# Manifests written by dsv3-cast/dsv3-convert and dsv3-inspect verify.
dsv3_shell_test(integrity_verify integrity/verify.sh)
dsv3_shell_test(integrity_archive integrity/archive.sh)
