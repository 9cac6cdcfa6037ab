"""media: the RTP engine. One media clock per process services every stream in a batch."""
