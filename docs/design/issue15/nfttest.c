#include <nftables/libnftables.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
int main(int argc,char**argv){
  FILE*f=fopen(argv[1],"r"); static char buf[4<<20]; size_t n=fread(buf,1,sizeof buf-1,f); buf[n]=0; fclose(f);
  struct nft_ctx *ctx=nft_ctx_new(NFT_CTX_DEFAULT);
  nft_ctx_buffer_output(ctx); nft_ctx_buffer_error(ctx);
  double t=now(); int rc=nft_run_cmd_from_buffer(ctx,buf);
  printf("rc=%d %.2f ms err=%s\n",rc,now()-t,nft_ctx_get_error_buffer(ctx));
  nft_ctx_free(ctx); return rc!=0;
}
