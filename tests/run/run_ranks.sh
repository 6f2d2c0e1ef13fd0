#!/usr/bin/env bash
# dsv3-run across ranks, the parts that need no GPU: rendezvous over TCP, the agreement after
# loading (mismatched degree, missing shard, a rank that never comes or dies), launcher
# environments and flags.  Every failure must be one line naming the rank and the cause, exit 1,
# within the --timeout, never a hang.
. "$SRC/tests/lib.sh"
"$RUN" --version | grep -q cuda || { echo "dsv3-run built without CUDA: multi-rank runs absent"; exit 77; }
M=$DSV3_TINY
"$CONVERT" "$M" "$T/mp2" --mp 2 -q || { echo "convert failed"; exit 1; }
PORT=$((20000 + RANDOM % 30000))
unset RANK WORLD_SIZE LOCAL_RANK MASTER_ADDR MASTER_PORT OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_SIZE PMI_RANK PMI_SIZE \
  SLURM_PROCID SLURM_NTASKS 2>/dev/null

# --gpus N: threads; the agreement reports every rank's error once
expect_error "degree mismatch" "rank 0,1: .*2 ranks need the runtime layout with mp 2.*dsv3-convert --mp 2" \
  "$RUN" --gpus 2 --ckpt "$M" --prompt hi --timeout 20
expect_error "wrong rank count" "rank 0,1,2: .*3 ranks need the runtime layout with mp 3.*is runtime with mp 2" \
  "$RUN" --gpus 3 --ckpt "$T/mp2" --prompt hi --timeout 20
mkdir "$T/half" && cp "$T/mp2/config.json" "$T/mp2/tokenizer.json" "$T/mp2/model0-mp2.safetensors" "$T/half/"
expect_error "missing shard" "model1-mp2.safetensors is missing" "$RUN" --gpus 2 --ckpt "$T/half" --prompt hi --timeout 20
expect_error "mp2 on one rank" "model-parallel degree 2.*--gpus 2" "$RUN" --ckpt "$T/mp2" --prompt hi --device cpu

# one process per rank, configured from a launcher's environment
t0=$(date +%s)
expect_error "rank 0 never comes" "rank 1: rank 0 (127.0.0.1:$((PORT + 1))) did not answer within 2 s" \
  env RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT "$RUN" --ckpt "$T/mp2" --prompt hi --timeout 2
expect_error "rank 1 never comes" "rank(s) 1 did not connect to rank 0 (port $PORT) within 2 s" \
  env OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_SIZE=2 DSV3_MASTER_PORT=$PORT "$RUN" --ckpt "$T/mp2" --prompt hi --timeout 2
[ $(( $(date +%s) - t0 )) -lt 20 ] && ok || fail "timeouts took $(( $(date +%s) - t0 )) s"
# both ranks of a mismatched run end with the same verdict
env SLURM_PROCID=1 SLURM_NTASKS=2 SLURM_LOCALID=1 MASTER_ADDR=localhost DSV3_MASTER_PORT=$PORT \
  "$RUN" --ckpt "$M" --prompt hi --timeout 20 > "$T/o1" 2> "$T/e1" & r1=$!
env SLURM_PROCID=0 SLURM_NTASKS=2 SLURM_LOCALID=0 MASTER_ADDR=localhost DSV3_MASTER_PORT=$PORT \
  "$RUN" --ckpt "$M" --prompt hi --timeout 20 > "$T/o0" 2> "$T/e0"; rc0=$?
wait $r1; rc1=$?
[ $rc0 = 1 ] && [ $rc1 = 1 ] && ok || fail "srun-style mismatch: exit codes $rc0 $rc1"
contains "rank 0 names the cause" "$T/e0" "ranks not ready: rank 0,1: .*need the runtime layout with mp 2"
contains "rank 1 names the cause" "$T/e1" "ranks not ready: rank 0,1: .*need the runtime layout with mp 2"
# a rank that connects and dies before reporting
PORT2=$((PORT + 7))
( sleep 0.5; exec 3<>"/dev/tcp/127.0.0.1/$PORT2" &&
  printf '\x44\x33\x52\x4e\x64\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00' >&3 &&
  exec 3>&- ) &
expect_error "rank dies before reporting" "rank 1\\( is gone\\|: did not report\\)" \
  env RANK=0 WORLD_SIZE=2 DSV3_MASTER_PORT=$PORT2 "$RUN" --ckpt "$T/mp2" --prompt hi --timeout 20
wait
# a stranger on the port is ignored; a process of another world is refused by name
PORT3=$((PORT + 11))
( sleep 0.5; exec 3<>"/dev/tcp/127.0.0.1/$PORT3" && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && exec 3>&-;
  sleep 0.3; exec 4<>"/dev/tcp/127.0.0.1/$PORT3" &&
  printf '\x44\x33\x52\x4e\x64\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x04\x00\x00\x00' >&4; sleep 1 ) &
expect_error "world mismatch" "runs a world of 2 ranks; a process came as rank 1 of 4" \
  env RANK=0 WORLD_SIZE=2 DSV3_MASTER_PORT=$PORT3 "$RUN" --ckpt "$T/mp2" --prompt hi --timeout 20
wait

# flags
expect_error "--gpus under a launcher" "both ask for ranks" env RANK=0 WORLD_SIZE=2 "$RUN" --gpus 2 --ckpt "$T/mp2" --prompt hi
expect_error "--master" "--master needs HOST:PORT" env RANK=0 WORLD_SIZE=2 "$RUN" --master nohost --ckpt "$T/mp2" --prompt hi
expect_error "bad environment" "not integers" env RANK=x WORLD_SIZE=2 "$RUN" --ckpt "$T/mp2" --prompt hi
expect_error "--gpus 0" "--gpus needs a positive integer" "$RUN" --gpus 0 --ckpt "$T/mp2" --prompt hi
expect_error "cpu and ranks" "run on GPUs" "$RUN" --gpus 2 --device cpu --ckpt "$T/mp2" --prompt hi
finish
