//! Shared inputs for jetmq's benchmarks: the packets and streams every bench measures, built
//! once so that jetmq and the peer codecs see the same bytes.
