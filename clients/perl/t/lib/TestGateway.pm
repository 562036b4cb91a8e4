package TestGateway;

# Helpers shared by the tests: where the gateway and the schemas are, and reading JSON.

use strict;
use warnings;

use Exporter 'import';
use JSON::PP ();
use Test::More ();

our @EXPORT_OK = qw(gateway_url schemas_dir read_json need_gateway start_proxy);

sub gateway_url { $ENV{GATEWAY_URL} }

# Skips the whole test file when there are none: a copy of clients/perl outside the
# repository (cpanm, a CPAN-style build) has no schemas/ beside it.
sub schemas_dir {
    return $ENV{GATEWAY_SCHEMAS} if $ENV{GATEWAY_SCHEMAS};
    require FindBin;
    my $dir = "$FindBin::Bin/../../../schemas";    # the repository's own, run from clients/perl
    Test::More::plan(skip_all => 'no schemas/ beside clients/perl: set GATEWAY_SCHEMAS') unless -d "$dir/vectors";
    return $dir;
}

sub read_json {
    my ($path) = @_;
    open my $file, '<:raw', $path or die "cannot read $path: $!";
    local $/;
    return JSON::PP->new->utf8->decode(<$file>);
}

# Skip the whole test file unless a running gateway is given.
sub need_gateway {
    Test::More::plan(skip_all => 'set GATEWAY_URL to run against a gateway') unless gateway_url();
}

# A TCP proxy to the gateway, in a child process, that cuts connections where a test says:
# $cut->($connection_number, $received, $sent) is called with everything the server sent
# on that connection so far (connections count from 1) and what the client sent (its
# request); it returns undef to pass it on, or a length: the client gets that much of it,
# then both sides are closed. Every request head
# is appended to $heads_file. Returns the proxy's pid (kill it when done) and port.
sub start_proxy {
    my ($target_url, $heads_file, $cut) = @_;
    require IO::Socket::INET;
    require POSIX;
    my ($host, $port) = $target_url =~ m{^http://([^:/]+):([0-9]+)} or die "not an http://host:port URL: $target_url";
    my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 5, ReuseAddr => 1)
        or die "cannot listen: $!";
    my $pid = fork // die "cannot fork: $!";
    return ($pid, $listener->sockport) if $pid;

    $SIG{CHLD} = 'IGNORE';    # no zombies from the relays
    my $connections = 0;
    while (my $client = $listener->accept) {
        my $number = ++$connections;
        my $relay = fork // die "cannot fork: $!";
        if ($relay == 0) {
            _relay($client, $host, $port, $number, $heads_file, $cut);
            POSIX::_exit(0);    # no END blocks or temp-file clean-up in the children
        }
        close $client;
    }
    POSIX::_exit(0);
}

sub _relay {
    my ($client, $host, $port, $number, $heads_file, $cut) = @_;
    require IO::Select;
    my $server = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port) or die "cannot connect: $!";
    my $select = IO::Select->new($client, $server);
    my ($from_server, $passed, $to_server, $unlogged) = ('', 0, '', '');
    while (my @ready = $select->can_read(60)) {
        for my $socket (@ready) {
            my $read = sysread $socket, my $chunk, 65536;
            return unless $read;
            if ($socket == $client) {
                $to_server .= $chunk;
                $unlogged  .= $chunk;
                # Each request head, once whole (several may come on one connection).
                while ($unlogged =~ s/\A(.*?\r\n\r\n)//s) {
                    open my $log, '>>', $heads_file or die $!;
                    print {$log} "$1";
                    close $log;
                }
                syswrite $server, $chunk;
                next;
            }
            $from_server .= $chunk;
            my $until = $cut->($number, $from_server, $to_server);
            my $end = defined $until ? $until : length $from_server;
            syswrite $client, substr($from_server, $passed, $end - $passed) if $end > $passed;
            $passed = $end if $end > $passed;
            return if defined $until;
        }
    }
}

1;
