"""placeholder"""
def add_arguments(parser, hostport, port_range):
    pass
def run_campaign(args, usage):
    return 0
