/* LD_PRELOAD shim: at exit, stop llama.cpp's common logger thread after it has written every queued line
   (common_log_pause joins the worker), so llama-perplexity's summary is never lost (llama.cpp issue 22142).
   Looks the symbols up at exit, so it is harmless in processes without libllama-common. */
#define _GNU_SOURCE
#include <dlfcn.h>
__attribute__((destructor)) static void flush_common_log(void) {
    void *(*log_main)(void) = (void *(*)(void))dlsym(RTLD_DEFAULT, "_Z15common_log_mainv");
    void (*log_pause)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "_Z16common_log_pauseP10common_log");
    if (log_main && log_pause) log_pause(log_main());
}
