// A Backend that times every op of another one (set AVSERVE_OP_TIMES=1 for any engine; CreateBackend wraps
// the backend it makes). Each op is bracketed by Synchronize() calls, so a row is the op's device time plus
// one launch: it answers "which op costs what", not "how fast is the whole step" (the syncs remove the
// overlap of host and device work). The table goes to stderr when the backend is destroyed: ops grouped by
// name and shape, most expensive first. Without `synchronise` (AVSERVE_OP_TIMES=host) a row is the host time
// spent inside the call: where the host, not the device, bounds a step (launch overhead), and how long the
// Download at a step's end waits for the device.
#pragma once

#include <memory>

#include "engine/backend/backend.h"

namespace avserve::engine {

std::unique_ptr<Backend> WrapWithOpTimer(std::unique_ptr<Backend> inner, bool synchronise = true);

}  // namespace avserve::engine
