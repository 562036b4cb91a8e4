package Gateway::Worker::FieldTable;

# Net::AMQP 0.06 (under AnyEvent::RabbitMQ) decodes only some AMQP field-table types and
# dies on the rest, e.g. the signed 8-bit integers ('b') that clients such as the
# gateway's (pamqp) use for small numbers in message headers. This module replaces its
# table and array decoders with complete ones covering every type RabbitMQ sends (the
# RabbitMQ errata of AMQP 0-9-1). Loading it is enough.

use strict;
use warnings;

use Net::AMQP::Common ();

our $VERSION = '0.01';

sub _take {
    my ($input, $length, $template) = @_;
    die "truncated AMQP field table\n" if length $$input < $length;
    return unpack $template, substr $$input, 0, $length, '';
}

my %DECODE;
%DECODE = (
    t => sub { _take($_[0], 1, 'C') ? 1 : 0 },
    b => sub { _take($_[0], 1, 'c') },
    B => sub { _take($_[0], 1, 'C') },
    s => sub { _take($_[0], 2, 's>') },
    u => sub { _take($_[0], 2, 'S>') },
    I => sub { _take($_[0], 4, 'l>') },
    i => sub { _take($_[0], 4, 'L>') },
    l => sub { _take($_[0], 8, 'q>') },
    L => sub { _take($_[0], 8, 'Q>') },
    f => sub { _take($_[0], 4, 'f>') },
    d => sub { _take($_[0], 8, 'd>') },
    D => sub {
        my $scale = _take($_[0], 1, 'C');
        return _take($_[0], 4, 'l>') / 10**$scale;
    },
    S => sub { my $length = _take($_[0], 4, 'N'); _take($_[0], $length, 'a*') },
    x => sub { my $length = _take($_[0], 4, 'N'); _take($_[0], $length, 'a*') },
    T => sub { _take($_[0], 8, 'Q>') },
    F => \&decode_table,
    A => \&decode_array,
    V => sub { undef },
);

sub _value {
    my ($input, $where) = @_;
    my $type = _take($input, 1, 'a');
    my $decode = $DECODE{$type} or die "unknown AMQP field type '$type' in $where\n";
    return $decode->($input);
}

sub decode_table {
    my ($input) = @_;
    my $length = _take($input, 4, 'N');
    my $table  = _take($input, $length, 'a*');
    my %fields;
    while (length $table) {
        my $name = _take(\$table, 1, 'C');
        $name = _take(\$table, $name, 'a*');
        $fields{$name} = _value(\$table, "field '$name'");
    }
    return \%fields;
}

sub decode_array {
    my ($input) = @_;
    my $length = _take($input, 4, 'N');
    my $array  = _take($input, $length, 'a*');
    my @values;
    push @values, _value(\$array, 'an array') while length $array;
    return \@values;
}

{
    no warnings 'redefine';
    # Net::AMQP looks these up by name each time it decodes a frame.
    *Net::AMQP::Common::unpack_field_table = \&decode_table;
    *Net::AMQP::Common::unpack_field_array = \&decode_array;
}

1;

__END__

=head1 NAME

Gateway::Worker::FieldTable - complete AMQP field-table decoding for Net::AMQP

=head1 SYNOPSIS

    use Gateway::Worker::FieldTable;    # before or after AnyEvent::RabbitMQ

=head1 DESCRIPTION

L<Net::AMQP> 0.06, which L<AnyEvent::RabbitMQ> uses, cannot decode several field types
RabbitMQ and other clients put in message headers (signed and unsigned 8-bit, 16-bit and
64-bit integers, floats, doubles, byte arrays) and dies on them, taking the connection
down. Loading this module replaces C<Net::AMQP::Common::unpack_field_table> and
C<unpack_field_array> with decoders of every type in RabbitMQ's AMQP 0-9-1 errata
(C<t b B s u I i l L f d D S x T F A V>). L<Gateway::Worker> loads it.

=head1 FUNCTIONS

=head2 decode_table(\$octets), decode_array(\$octets)

Decode a field table (as a hashref) or array (as an arrayref) from the front of
C<$octets>, consuming it.

=cut
