/* LD_PRELOAD shim for llama.cpp's tools: at exit, stop the common logger's worker thread after it has
   written every queued line (common_log_pause joins it), so that llama-perplexity never loses its summary
   (llama.cpp issue 22142; prism_native retries such runs up to 8 times, which on a busy machine cost
   more than the measurements themselves). The symbols are looked up at exit, so the shim is harmless in
   processes without libllama-common. No number changes, only whether it is printed.

       gcc -O2 -shared -fPIC scripts/llama_log_flush.c -o llama_log_flush.so -ldl
       mkdir bin && ln -s $LLAMA/llama-quantize $LLAMA/llama-imatrix bin/
       printf '#!/bin/sh\nLD_PRELOAD=%s exec %s "$@"\n' $PWD/llama_log_flush.so $LLAMA/llama-perplexity \
           > bin/llama-perplexity && chmod +x bin/llama-perplexity      # then: eval --llama-cpp bin
*/
#define _GNU_SOURCE
#include <dlfcn.h>

__attribute__((destructor)) static void flush_common_log(void) {
    void *(*log_main)(void) = (void *(*)(void))dlsym(RTLD_DEFAULT, "_Z15common_log_mainv");
    void (*log_pause)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "_Z16common_log_pauseP10common_log");
    if (log_main && log_pause)
        log_pause(log_main());
}
