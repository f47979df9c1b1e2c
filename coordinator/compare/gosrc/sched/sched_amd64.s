// The address of runtime.sched (the scheduler's schedt), for Read.
#include "textflag.h"

TEXT ·Addr(SB),NOSPLIT,$0-8
	MOVQ	$runtime·sched(SB), AX
	MOVQ	AX, ret+0(FP)
	RET
