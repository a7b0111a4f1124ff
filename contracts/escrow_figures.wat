;; Escrow figures (seed 004), an independent implementation of the escrow
;; agency's formulas, which the escrow service compares with the business
;; system's. Integers only (floating point is refused on chain): money in
;; cents, floor area in hundredths of a square metre, ratios in basis
;; points (10000 = 100 %); each division rounds down.
;;   initial restricted   = unit price x floor area / 100 x escrow ratio / 10000
;;   effective restricted = initial restricted x current restricted ratio / 10000
;;                          (10000 at the start, 0 at delivery)
;;   releasable           = current balance - effective restricted
;;   figures  input: 5 x i64 LE (unit price, floor area, escrow ratio,
;;            current restricted ratio, current balance);
;;            output: 3 x i64 LE (initial, effective, releasable)
;; Negative inputs, ratios above 10000 and overflow abort the call.
(module
  (import "kubeledger" "input_len" (func $input_len (result i32)))
  (import "kubeledger" "input_read" (func $input_read (param i32)))
  (import "kubeledger" "output" (func $output (param i32 i32)))
  (import "kubeledger" "abort" (func $abort (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "malformed input")
  (data (i32.const 16) "overflow")
  (data (i32.const 32) "ratio above 10000")
  ;; 1024: the input (40 bytes); 2048: the output (24 bytes).

  ;; a x b, aborting on overflow (both non-negative).
  (func $mul (param $a i64) (param $b i64) (result i64)
    (if (i64.eqz (local.get $a)) (then (return (i64.const 0))))
    (if (i64.gt_u (local.get $b) (i64.div_u (i64.const 0x7fffffffffffffff) (local.get $a)))
      (then (call $abort (i32.const 16) (i32.const 8))))
    (i64.mul (local.get $a) (local.get $b)))

  (func $ratio (param $r i64) (result i64)
    (if (i64.gt_u (local.get $r) (i64.const 10000)) (then (call $abort (i32.const 32) (i32.const 17))))
    (local.get $r))

  (func (export "figures")
    (local $price i64) (local $area i64) (local $escrow i64) (local $current i64)
    (local $balance i64) (local $initial i64) (local $effective i64)
    (if (i32.ne (call $input_len) (i32.const 40)) (then (call $abort (i32.const 0) (i32.const 15))))
    (call $input_read (i32.const 1024))
    (local.set $price (i64.load (i32.const 1024)))
    (local.set $area (i64.load (i32.const 1032)))
    (local.set $escrow (call $ratio (i64.load (i32.const 1040))))
    (local.set $current (call $ratio (i64.load (i32.const 1048))))
    (local.set $balance (i64.load (i32.const 1056)))
    (if (i32.or (i64.lt_s (local.get $price) (i64.const 0))
                (i32.or (i64.lt_s (local.get $area) (i64.const 0)) (i64.lt_s (local.get $balance) (i64.const 0))))
      (then (call $abort (i32.const 0) (i32.const 15))))
    (local.set $initial
      (i64.div_u
        (call $mul (i64.div_u (call $mul (local.get $price) (local.get $area)) (i64.const 100)) (local.get $escrow))
        (i64.const 10000)))
    (local.set $effective
      (i64.div_u (call $mul (local.get $initial) (local.get $current)) (i64.const 10000)))
    (i64.store (i32.const 2048) (local.get $initial))
    (i64.store (i32.const 2056) (local.get $effective))
    (i64.store (i32.const 2064) (i64.sub (local.get $balance) (local.get $effective)))
    (call $output (i32.const 2048) (i32.const 24))))
